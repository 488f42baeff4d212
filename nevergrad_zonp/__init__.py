"""nevergrad-zonp: zeroth-order training of black-box neural networks for Nevergrad.

Importing the package registers ``ZONP``, ``ZOI`` and ``ZOco`` in
``nevergrad.optimizers.registry``.
"""

from .adapters import HardwareAdapter, MiniBatches, ModelAdapter
from .optimizers import NAMES, ZOI, ZONP, ZerothOrder, ZOco
from .oracle import OutputOracle
from .vectorized import iteration_size, minimize_vectorized, uses_fast_path

__all__ = [
    "NAMES",
    "ZONP",
    "ZOI",
    "ZOco",
    "ZerothOrder",
    "OutputOracle",
    "HardwareAdapter",
    "ModelAdapter",
    "MiniBatches",
    "iteration_size",
    "minimize_vectorized",
    "uses_fast_path",
]
__version__ = "0.1.0"
