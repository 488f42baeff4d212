"""Adapters: model-aware Nevergrad objectives that also serve as output oracles.

The built-in losses and the accuracy are defined in :mod:`nevergrad_zonp.losses` and
exported here too, as the adapters' defaults.
"""

from ..losses import accuracy, categorical_loss, complex_loss, gaussian_loss
from .batches import MiniBatches
from .hardware import HardwareAdapter
from .model import ModelAdapter, TaskLike

__all__ = [
    "HardwareAdapter",
    "ModelAdapter",
    "MiniBatches",
    "TaskLike",
    "accuracy",
    "categorical_loss",
    "complex_loss",
    "gaussian_loss",
]
