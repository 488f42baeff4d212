"""Step-size tuning rules: the grid, the score of a step size, the choice and the grid's extension.

For every task and method the harness runs every point of the method's log-spaced grid
(:func:`step_grid`, same number of points for every method) on every tuning seed (none of
them a reported seed).  A step size's score (:func:`step_score`) is the **median over the
tuning seeds of the final training loss** (a non-finite loss or a failed run counts as
infinite); the lowest score wins, ties to the smaller step (:func:`choose_step`).  When the
winner is the lowest or the highest grid point, the grid is extended by one point beyond
that edge, same log spacing (:func:`extend_grid`).  :data:`TUNING_RULE` states the rule in
``tuning.json``.

A method without a step size (NGOpt, which runs with Nevergrad's defaults) has no grid and no
tuning run: its ``tuning.json`` entry (:func:`untuned_entry`) says so instead.
"""

from __future__ import annotations

import math
import typing as tp

import numpy as np

if tp.TYPE_CHECKING:
    from .methods import Method

TUNING_RULE = (
    "lowest median over the tuning seeds of the final training loss (full training split); ties to the smaller "
    "step; a grid whose best point is at an edge is extended beyond it"
)


def step_grid(low: float, high: float, size: int) -> list[float]:
    """``size`` log-spaced step sizes from ``low`` to ``high``, rounded to 3 significant digits."""
    if not 0 < low <= high:
        raise ValueError(f"a step-size range needs 0 < low <= high, got ({low}, {high})")
    return [float(f"{value:.3g}") for value in np.geomspace(low, high, size)]


def step_score(losses: tp.Sequence[float | None]) -> float:
    """Score of one step size: the median of its final training losses over the tuning seeds.

    A non-finite loss, or ``None`` for a run that failed, counts as infinite.
    """
    return float(np.median([loss if loss is not None and math.isfinite(loss) else math.inf for loss in losses]))


def choose_step(grid: list[float], scores: list[float]) -> float:
    """The grid point of lowest score (non-finite scores last; ties to the earlier, smaller step)."""
    finite = [score if math.isfinite(score) else math.inf for score in scores]
    return grid[int(np.argmin(finite))]


def extend_grid(grid: list[float], chosen: float) -> float | None:
    """The next point beyond the edge ``chosen`` sits on (same log ratio as the grid), else ``None``."""
    ordered = sorted(grid)
    if chosen == ordered[0]:
        return float(f"{ordered[0] ** 2 / ordered[1]:.3g}")
    if chosen == ordered[-1]:
        return float(f"{ordered[-1] ** 2 / ordered[-2]:.3g}")
    return None


def untuned_entry(method: "Method") -> dict[str, tp.Any]:
    """The ``tuning.json`` entry of a method without a step size: not tuned, and the line that says so.

    ``chosen`` and ``step_name`` are ``None`` (its reported runs have no step size); ``note``
    is :meth:`~comparisons.methods.Method.untuned_note`, e.g. "NGOpt: no step size,
    Nevergrad's defaults (nevergrad 1.0.12), not tuned".
    """
    if method.tuned:
        raise ValueError(f"{method.name} has a step size ({method.step_name}): it is tuned")
    return {"step_name": None, "chosen": None, "tuned": False, "note": method.untuned_note()}
