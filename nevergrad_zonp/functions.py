"""Classic continuous test functions, for checking optimizers against published behaviour."""

from __future__ import annotations

import math
import typing as tp

import numpy as np
from nevergrad.optimization import base

from .optimizers.iterations import population_size


def sphere(x: np.ndarray) -> float:
    """``sum x_i^2``; minimum 0 at the origin."""
    return float(np.sum(np.asarray(x) ** 2))


def ellipsoid(x: np.ndarray) -> float:
    """Axis-aligned ellipsoid ``sum 10^(6 (i-1)/(n-1)) x_i^2``, condition number 1e6."""
    x = np.asarray(x)
    return float(np.sum(10 ** (6 * np.arange(x.size) / (x.size - 1)) * x**2))


def rosenbrock(x: np.ndarray) -> float:
    """``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``; minimum 0 at all ones."""
    x = np.asarray(x)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def run_to_target(
    optimizer: base.Optimizer, function: tp.Callable[[np.ndarray], float], target: float, max_evals: int
) -> tuple[int | None, float]:
    """Generation by generation (ask a population, tell it): evaluations until a loss ``<= target``.

    Returns ``(evaluations, best loss)``, with ``None`` evaluations if the target was not
    reached within ``max_evals``.
    """
    best = math.inf
    evaluations = 0
    while evaluations < max_evals:
        candidates = [optimizer.ask() for _ in range(population_size(optimizer))]
        for candidate in candidates:
            loss = function(candidate.value)
            optimizer.tell(candidate, loss)
            evaluations += 1
            best = min(best, loss)
            if loss <= target:
                return evaluations, best
    return None, best
