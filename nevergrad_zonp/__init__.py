"""nevergrad-zonp: zeroth-order training of black-box neural networks for Nevergrad.

Importing the package registers ``ZONP``, ``ZOI`` and ``ZOco`` in
``nevergrad.optimizers.registry``.
"""

from .optimizers import NAMES, ZOI, ZONP, ZerothOrder, ZOco
from .oracle import OutputOracle

__all__ = ["NAMES", "ZONP", "ZOI", "ZOco", "ZerothOrder", "OutputOracle"]
__version__ = "0.1.0"
