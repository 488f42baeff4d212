"""The iteration-level fast path shared by the optimizers of this package.

A ZO iteration (``Q + 1`` queries that differ from one base vector in one block) or an
evolution-strategy generation (a population of full vectors) is asked at once as an
:class:`IterationRequest` and told at once, without one Nevergrad candidate per query
(``ask_iteration`` / ``tell_iteration`` on the optimizers;
:func:`nevergrad_zonp.minimize_vectorized` uses them when it can).
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np
from nevergrad.parametrization import parameter as p


@dataclasses.dataclass(frozen=True)
class IterationRequest:
    """A whole ZO iteration asked at once (the iteration-level fast path).

    The ``size`` queries of the iteration are the parameter vector ``theta`` (values, not
    standardized data) with ``deltas[v]`` added to ``theta[start:start + n_b]``; row 0 of
    ``deltas`` is zero (the base point).  All of them are to be evaluated on mini-batch
    ``key``, for instance by an adapter's ``block_losses(theta, start, deltas, key)``, and
    their losses told at once with ``tell_iteration``.
    """

    index: int
    theta: np.ndarray
    start: int
    deltas: np.ndarray
    key: int

    @property
    def size(self) -> int:
        """Queries of the iteration (``Q + 1``, fewer for the last one of a budget)."""
        return len(self.deltas)

    def values(self) -> tp.List[np.ndarray]:
        """The ``size`` full parameter vectors, for objectives that take whole vectors."""
        stop = self.start + self.deltas.shape[1]
        thetas = np.repeat(self.theta[None], self.size, axis=0)
        thetas[:, self.start : stop] += self.deltas
        return list(thetas)


def plain_array_origin(parametrization: p.Parameter) -> tp.Optional[np.ndarray]:
    """The value at standardized data 0 if ``parametrization`` is a plain ``ng.p.Array``, else ``None``.

    Plain: unbounded, sigma 1, no constraint, a vector value; then a candidate's value is this
    origin plus its standardized data, which is what lets a request carry values directly.
    """
    if not isinstance(parametrization, p.Array) or parametrization._constraint_checkers:
        return None
    dimension = parametrization.dimension
    if any(bound is not None for bound in parametrization.bounds):
        return None
    zero = parametrization.spawn_child().set_standardized_data(np.zeros(dimension)).value
    if not isinstance(zero, np.ndarray) or zero.shape != (dimension,):
        return None
    for probe in (np.ones(dimension), np.linspace(-1e3, 1e3, dimension)):  # unit sigma, no transform
        value = parametrization.spawn_child().set_standardized_data(probe).value
        if not np.allclose(value - zero, probe, rtol=1e-9, atol=1e-9):
            return None
    return np.asarray(zero, dtype=np.float64).copy()
