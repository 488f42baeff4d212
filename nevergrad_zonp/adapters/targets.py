"""Outputs and class labels checked against the targets they are to fit.

What :class:`~nevergrad_zonp.adapters.HardwareAdapter` checks before outputs become a loss
(the contract is stated on that class, under "Checks"):

- :func:`target_labels` summarises the class labels of categorical targets (a
  :class:`Labels`) and refuses negative labels (:data:`~nevergrad_zonp.losses.IGNORE_INDEX`
  aside), and floating targets for the built-in cross-entropy;
- :func:`data_labels` does the same for a whole data set, which must also hold a label that
  is not ignored;
- :func:`check_outputs` refuses outputs ``(V, batch, ...)`` that do not fit the targets, and
  class labels beyond the outputs' classes.

Every refusal is a ``ValueError`` that names what is wrong: the rows (through the caller's
``describe``), the first bad label of each, the shapes.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import torch
import torch.nn.functional as F

from ..losses import IGNORE_INDEX, Loss, categorical_loss
from .batches import SHOWN_ROWS


@dataclasses.dataclass(frozen=True)
class Labels:
    """What the checks and losses need of a set of class labels."""

    high: int  # the largest label (IGNORE_INDEX if all are ignored)
    ignored: int  # labels equal to IGNORE_INDEX
    count: int  # labels in all


def _refuse_labels(
    flat: torch.Tensor, bad: torch.Tensor, classes: tp.Optional[int], describe: tp.Callable[[torch.Tensor], str]
) -> None:
    """Raises ``ValueError`` naming the rows of ``flat (rows, labels)`` where ``bad`` holds, with their first bad label."""
    rows = bad.any(dim=1).nonzero().flatten()
    if not len(rows):
        return
    values = ", ".join(str(int(flat[row][bad[row]][0])) for row in rows[:SHOWN_ROWS])
    values += ", ..." if len(rows) > SHOWN_ROWS else ""
    valid = f"the {classes} classes of the outputs (0 to {classes - 1})" if classes is not None else "the classes (0 or more)"
    raise ValueError(
        f"class labels outside {valid} in {describe(rows)} (labels {values}); a label is a class index, "
        f"or {IGNORE_INDEX} (torch's ignore index) to leave it out of the loss"
    )


def _shape_text(shape: tp.Sequence[tp.Any]) -> str:
    """``(11, classes)``: a shape with named dimensions, as Python prints a tuple of integers."""
    return f"({', '.join(str(size) for size in shape)}{',' if len(shape) == 1 else ''})"


def target_labels(targets: torch.Tensor, describe: tp.Callable[[torch.Tensor], str], loss: Loss) -> tp.Optional[Labels]:
    """Summary of categorical targets (``None``: not class labels); refuses negative labels
    (:data:`IGNORE_INDEX` aside) and floating targets for the built-in cross-entropy.

    ``describe`` names rows of ``targets`` in an error message; ``loss`` is the adapter's
    loss (floating, complex or boolean targets are refused only when it is
    ``categorical_loss`` or ``F.cross_entropy``).
    """
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        if loss in (categorical_loss, F.cross_entropy):
            raise ValueError(
                f"output='categorical' with the cross-entropy loss needs integer class labels as targets, got {targets.dtype}"
            )
        return None
    flat = targets.reshape(len(targets), -1)
    _refuse_labels(flat, (flat < 0) & (flat != IGNORE_INDEX), None, describe)
    return Labels(high=int(flat.max()), ignored=int((flat == IGNORE_INDEX).sum()), count=flat.numel())


def data_labels(targets: torch.Tensor, describe: tp.Callable[[torch.Tensor], str], loss: Loss) -> tp.Optional[Labels]:
    """:func:`target_labels` of a whole data set, which must hold a label that is not ignored."""
    labels = target_labels(targets, describe, loss)
    if labels is not None and labels.ignored == labels.count:
        raise ValueError(f"every target is {IGNORE_INDEX} (torch's ignore index): the data hold no label to fit")
    return labels


def check_outputs(
    out: torch.Tensor,
    targets: torch.Tensor,
    labels: tp.Optional[Labels],
    source: tp.Optional[tp.Tuple[torch.Tensor, tp.Callable[[torch.Tensor], str]]],
    output: str,
) -> None:
    """Refuses outputs ``(V, batch, ...)`` that do not fit ``targets``, and labels beyond the outputs' classes.

    ``labels`` summarises the class labels of ``source = (targets, describe)`` (the data
    or the mini-batch ``targets`` come from; ``describe`` names rows of them), ``None``
    where the targets are no class labels.  ``output`` is the adapter's output model
    (``"categorical"``, ``"gaussian"`` or ``"complex"``).
    """
    if out.dtype.is_complex and output != "complex":
        raise ValueError(f"outputs are complex ({out.dtype}) but output={output!r}; use output='complex'")
    shape = tuple(out.shape[1:])
    if labels is not None:
        if len(shape) < 2 or math.prod(shape[:-1]) != targets.numel():
            raise ValueError(
                f"the outputs of one setting have shape {shape}, which does not fit the targets of shape "
                f"{tuple(targets.shape)}: output='categorical' needs logits of shape "
                f"{_shape_text((*targets.shape, 'classes'))}, the classes on the last axis"
            )
        classes = shape[-1]
        if labels.high >= classes:
            assert source is not None
            flat = source[0].reshape(len(source[0]), -1)
            _refuse_labels(flat, flat >= classes, classes, source[1])
    elif output != "categorical" and math.prod(shape) != targets.numel():
        raise ValueError(
            f"the outputs of one setting have shape {shape}, which does not fit the targets of shape "
            f"{tuple(targets.shape)}: output={output!r} needs one output per target, shape {tuple(targets.shape)}"
        )
