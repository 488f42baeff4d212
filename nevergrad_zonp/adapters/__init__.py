"""Adapters: model-aware Nevergrad objectives that also serve as output oracles."""

from .batches import MiniBatches
from .hardware import HardwareAdapter, accuracy, categorical_loss, complex_loss, gaussian_loss
from .model import ModelAdapter

__all__ = [
    "HardwareAdapter",
    "ModelAdapter",
    "MiniBatches",
    "accuracy",
    "categorical_loss",
    "complex_loss",
    "gaussian_loss",
]
