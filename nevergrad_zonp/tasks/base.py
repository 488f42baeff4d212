"""What every training task provides: models, data, loss, metrics and output model.

A task is the unit the comparison harness iterates over.  The *ideal* model is the
simulation that backprop pretraining may use; the *chip* (optional) is the same
architecture with hidden fabrication errors, the only thing a black-box optimizer
queries in the papers' protocol (docs/method.md, "The problem and the protocol").
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nevergrad_zonp._checks import integer_at_least
from nevergrad_zonp.losses import Loss, Metric
from nevergrad_zonp.photonics.chip import transfer_parameters


@dataclasses.dataclass
class Task:
    """A training problem in the form the adapter and the harness consume.

    Attributes
    ----------
    name: short identifier used in result tables.
    model: the ideal model (``nn.Module``); its trainable parameters are what ZO optimizes.
    train, test: ``(inputs, targets)`` tensor pairs.
    output: the output model of the network outputs used by the Fisher:
        ``"categorical"`` (logits, last axis = classes, extra axes = time steps),
        ``"gaussian"`` (real outputs, unit-variance Gaussian) or ``"complex"``.
    loss: ``loss(outputs, targets) -> scalar`` on one mini-batch (outputs of shape
        ``(batch, ...)``); differentiable, used by backprop and by the adapter.
    metrics: named ``metric(outputs, targets) -> float`` evaluated on full splits.
    chip: optional model with hidden fabrication errors, same parameter names and
        shapes as ``model``.
    """

    name: str
    model: nn.Module
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    output: str
    loss: Loss
    metrics: dict[str, Metric]
    chip: nn.Module | None = None

    def evaluate(self, model: nn.Module | None = None, split: str = "test", batch_size: int = 1000) -> dict[str, float]:
        """Loss and metrics of ``model`` (default: the ideal model) on a full split, without gradients."""
        model = self.model if model is None else model
        inputs, targets = self.test if split == "test" else self.train
        outputs = []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                outputs.append(model(inputs[start : start + batch_size]))
        out = torch.cat(outputs)
        result = {"loss": float(self.loss(out, targets))}
        result.update({name: float(metric(out, targets)) for name, metric in self.metrics.items()})
        return result


def pretrain(
    task: Task,
    *,
    epochs: int,
    lr: float = 1e-2,
    batch_size: int = 100,
    seed: int = 0,
    model: nn.Module | None = None,
) -> list[float]:
    """Backprop training (Adam) of ``model`` (default: the task's ideal model) on the train split.

    This is the first half of the papers' protocol: a few epochs of exact gradients on the
    simulated model, before zeroth-order fine-tuning on the chip.  Training the task's own
    model (``model=None``) programs the result onto its chip too (:func:`~nevergrad_zonp.photonics.transfer_parameters`),
    so ``ModelAdapter.from_task(task, on="chip")`` starts from the pretrained setting.
    Returns the mean training loss of each epoch.
    """
    own = model is None  # the task's own model: its chip is programmed with the result
    model = task.model if model is None else model
    inputs, targets = task.train
    if not integer_at_least(epochs, 0) or not len(inputs):
        raise ValueError(f"pretrain needs a non-negative integer of epochs and a non-empty train split, got {epochs!r} and {len(inputs)} samples")
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total, count = 0.0, 0
        for start in range(0, len(inputs), batch_size):
            idx = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = task.loss(model(inputs[idx]), targets[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append(total / count)
    if own and task.chip is not None:  # the protocol's second half starts from this setting
        transfer_parameters(task.model, task.chip)
    return history
