"""nevergrad-zonp: zeroth-order training of black-box neural networks for Nevergrad.

Importing the package registers ``ZONP``, ``ZONPPaper``, ``ZOI``, ``ZOco``, ``ZOSGD``, ``ZOSignSGD``,
``LPP``, ``HiZOO``, ``HiZOOPaper``, ``SNES``, ``XNES`` and the learned optimizers ``ZOL2L`` and ``ZOL2LNoQuery`` in
``nevergrad.optimizers.registry`` (the list is :data:`NAMES`).
"""

from .adapters import HardwareAdapter, MiniBatches, ModelAdapter
from .learned import ZOL2L, LearnedZO, ZOL2LNoQuery
from .learned.optimizer import TrainedSettingsWarning
from .optimizers import NAMES as _OPTIMIZER_NAMES
from .optimizers import (
    ZOI,
    ZONP,
    ZONPPaper,
    LPP,
    FlatQueriesWarning,
    HessianInformed,
    HiZOO,
    InvalidQueryWarning,
    LayeredPerturbation,
    LayeredPerturbationsInactiveWarning,
    NaturalPerturbationsInactiveWarning,
    UntoldQueriesWarning,
    ZerothOrder,
    ZOco,
)
from .optimizers.resources import reuse_freed_memory
from .oracle import OutputOracle
from .vectorized import iteration_size, minimize_vectorized, uses_fast_path

#: Names this package registers in ``ng.optimizers.registry``.
NAMES = [*_OPTIMIZER_NAMES, "ZOL2L", "ZOL2LNoQuery"]

__all__ = [
    "NAMES",
    "ZONP",
    "ZONPPaper",
    "ZOI",
    "ZOco",
    "ZerothOrder",
    "LPP",
    "HiZOO",
    "LayeredPerturbation",
    "HessianInformed",
    "ZOL2L",
    "ZOL2LNoQuery",
    "LearnedZO",
    "OutputOracle",
    "HardwareAdapter",
    "ModelAdapter",
    "MiniBatches",
    "iteration_size",
    "minimize_vectorized",
    "uses_fast_path",
    "reuse_freed_memory",
    # warnings, to filter or catch by class
    "InvalidQueryWarning",
    "FlatQueriesWarning",
    "UntoldQueriesWarning",
    "NaturalPerturbationsInactiveWarning",
    "LayeredPerturbationsInactiveWarning",
    "TrainedSettingsWarning",
]
__version__ = "0.1.0"
