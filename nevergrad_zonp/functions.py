"""Classic continuous test functions, for checking optimizers against published behaviour."""

from __future__ import annotations

import numpy as np


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
