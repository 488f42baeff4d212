"""Losses and metrics of network outputs, shared by the adapters and the tasks.

The bottom layer of the package (it imports torch only): the adapters' built-in losses
for the three output models of the black-box Fisher (:mod:`nevergrad_zonp.fisher`), their
batched twins, which evaluate ``V`` parameter settings' outputs ``(V, batch, ...)`` in one
call, and the accuracy.

- ``categorical``: :func:`categorical_loss`, the mean cross-entropy of logits (classes on
  the last axis) against integer class labels; a label equal to :data:`IGNORE_INDEX` is
  left out, as ``torch.nn.functional.cross_entropy`` leaves it out;
- ``gaussian``: :func:`gaussian_loss`, the mean squared error (the negative
  log-likelihood of a unit-variance Gaussian, up to constants);
- ``complex``: :func:`complex_loss`, the mean squared modulus of the complex error.

A batched twin returns the ``(V,)`` losses that a loop over the settings would return, up
to float rounding (:data:`PER_SETTING` maps each built-in loss, and ``F.cross_entropy``,
to its twin).
"""

from __future__ import annotations

import math
import typing as tp

import torch
import torch.nn.functional as F

#: ``loss(outputs (batch, ...), targets) -> scalar tensor`` on one mini-batch.
Loss = tp.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: ``metric(outputs (batch, ...), targets) -> float`` on a full data set.
Metric = tp.Callable[[torch.Tensor, torch.Tensor], float]
#: ``twin(outputs (V, batch, ...), targets (batch, ...)) -> (V,)``: a loss of each of ``V`` settings.
PerSettingLoss = tp.Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Target of a position left out of the loss and the accuracy (torch's ``cross_entropy`` default).
IGNORE_INDEX = -100


def categorical_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits ``(batch, ..., classes)`` against integer targets ``(batch, ...)``."""
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def gaussian_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error (the unit-variance Gaussian negative log-likelihood up to constants)."""
    return torch.mean((outputs - targets.reshape(outputs.shape).to(outputs.dtype)) ** 2)


def complex_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared modulus of the complex error, real and imaginary parts as Gaussian outputs."""
    return torch.mean(torch.abs(outputs - targets.reshape(outputs.shape).to(outputs.dtype)) ** 2)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of (sample, step) positions whose arg-max logit (last axis) is the target class.

    Positions whose target is :data:`IGNORE_INDEX` are left out (NaN when all are).
    """
    targets = targets.reshape(outputs.shape[:-1])
    correct = outputs.argmax(dim=-1) == targets
    kept = targets != IGNORE_INDEX
    if bool(kept.all()):
        return float(correct.double().mean())
    return float(correct[kept].double().mean()) if bool(kept.any()) else math.nan


#: Below this many classes the cross-entropy normalises over a non-last dimension: torch's CPU
#: log-softmax over a last dimension shorter than its vector width (16 float32 with AVX-512)
#: takes a slow path, while from 16 classes on the last-dimension kernel is the faster one.
_FEW_CLASSES = 16
_NO_REDUCTION = 0  # torch's enum value of reduction="none" (torch.nn._reduction.get_enum)


def _categorical_terms(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``(V, positions)`` of each setting at each target; 0 where the target is :data:`IGNORE_INDEX`."""
    count, classes = outputs.shape[0], outputs.shape[-1]
    if classes < _FEW_CLASSES:
        # (V, classes, samples): the same cross-entropy, up to float rounding (1 ulp).  The
        # kernel F.cross_entropy(..., reduction="none") calls, without its argument handling.
        logits = outputs.reshape(count, -1, classes).transpose(1, 2)
        flat_targets = targets.reshape(1, -1).expand(count, -1)
        return torch._C._nn.cross_entropy_loss(logits, flat_targets, None, _NO_REDUCTION, IGNORE_INDEX, 0.0)
    flat_targets = targets.reshape(1, -1).expand(count, -1).reshape(-1)
    return F.cross_entropy(outputs.reshape(-1, classes), flat_targets, reduction="none").reshape(count, -1)


def per_setting_categorical(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy ``(V,)`` of each setting's logits ``(V, batch, ..., classes)``: :func:`categorical_loss`'s twin.

    Every position counts; with ignored targets use :func:`per_setting_categorical_kept`.
    """
    return _categorical_terms(outputs, targets).mean(dim=1)


def per_setting_categorical_kept(outputs: torch.Tensor, targets: torch.Tensor, kept: int) -> torch.Tensor:
    """The mean cross-entropy ``(V,)`` over the ``kept`` targets that are not :data:`IGNORE_INDEX`, as torch's ``mean`` takes it."""
    return _categorical_terms(outputs, targets).sum(dim=1) / kept


def per_setting_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared (modulus of the) error of each of ``V`` settings' outputs ``(V, batch, ...)``: ``(V,)``."""
    error = outputs - targets.reshape(outputs.shape[1:]).to(outputs.dtype)[None]
    return (torch.abs(error) ** 2).reshape(len(outputs), -1).mean(dim=1)


#: The built-in loss of each output model.
DEFAULT_LOSSES: tp.Dict[str, Loss] = {
    "categorical": categorical_loss,
    "gaussian": gaussian_loss,
    "complex": complex_loss,
}
#: The batched twin of each built-in loss and of ``F.cross_entropy`` (the image tasks' loss).
PER_SETTING: tp.Dict[Loss, PerSettingLoss] = {
    categorical_loss: per_setting_categorical,
    F.cross_entropy: per_setting_categorical,
    gaussian_loss: per_setting_squared_error,
    complex_loss: per_setting_squared_error,
}
