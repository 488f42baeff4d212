"""Iterations of the optimizers: their size, the fast path's requests, the checks they share.

:func:`population_size` is the number of candidates that belong together in one iteration
of an instantiated optimizer (this package's and Nevergrad's CMA-ES alike);
:data:`CLIPPED_LOSS` is the value Nevergrad's ``tell`` clips failed losses to.

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
from nevergrad.optimization import base
from nevergrad.optimization.optimizerlib import _CMA
from nevergrad.parametrization import helpers
from nevergrad.parametrization import parameter as p

#: Nevergrad's ``tell`` clips NaN, inf and every loss from this value up to exactly this value.
CLIPPED_LOSS = 5.0e20


def population_size(optimizer: base.Optimizer) -> int:
    """Candidates per iteration (generation) of an instantiated optimizer.

    Optimizers of this package expose ``iteration_size`` (NES: ``lambda``; the ZO
    optimizers: ``Q + 1``).  For Nevergrad's CMA-ES it is the population handed to ``cma``,
    ``max(popsize, num_workers)``.  Raises ``TypeError`` for any other optimizer.
    """
    size = getattr(optimizer, "iteration_size", None)
    if size is not None:
        return int(size)
    if isinstance(optimizer, _CMA):
        return int(optimizer._popsize)
    raise TypeError(f"{optimizer.name} has no known population size (no iteration_size, not CMA-ES)")


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


@dataclasses.dataclass
class OpenIteration:
    """The queries of one ZO iteration (its base point and directions) while they are asked and told.

    ``recoveries_at_start``: recoveries when it started (if one happened since, its estimate
    is discarded); ``steps_at_start``: steps taken before it started; ``batch``: the
    mini-batch key of its queries (its index, or that of the open iteration it shares its
    base point with); ``limit``: cut short after that many asks; ``probe``: the discrete
    probe carried by its last direction.
    """

    index: int
    block: int
    base: np.ndarray
    directions: np.ndarray
    losses: np.ndarray
    recoveries_at_start: int
    steps_at_start: int
    batch: int
    asked: int = 0
    told: int = 0
    limit: tp.Optional[int] = None
    probe: tp.Optional[tp.Tuple[int, float]] = None

    @property
    def size(self) -> int:
        """Queries of this iteration: the base point plus one per direction (or fewer, if cut short)."""
        return len(self.losses) if self.limit is None else self.limit


def check_parametrization(parametrization: p.Parameter, optimizer: str, *, finite_differences: bool) -> None:
    """Refuses, naming the problem, a parametrization the optimizer cannot handle.

    - Constraints (``register_cheap_constraint``) for every optimizer of this package:
      Nevergrad replaces a candidate that breaks one by another it never asked (a
      resampled or solver-made point), which breaks a ZO iteration's finite differences
      and leaves an evolution strategy's sample untold.
    - For the finite-difference optimizers (``finite_differences``), a stochastic
      parametrization (``ng.p.Choice`` samples its value): a query moved by ``mu`` would see
      another sampled choice and the estimate would be noise.  Discrete but deterministic
      parts (``TransitionChoice``, a deterministic ``Choice``, integer casting) are
      accepted: the ZO optimizer keeps them out of its gradient estimate and moves them by
      probes (:func:`continuous_coordinates`, :class:`~nevergrad_zonp.ZerothOrder`).
    """
    constrained = [name or "the parametrization" for name, sub in helpers.flatten(parametrization) if sub._constraint_checkers]
    if constrained:
        raise ValueError(
            f"{optimizer} does not support constraints (registered on {', '.join(constrained)}): add a penalty "
            "to the loss instead, or use one of Nevergrad's optimizers that handle constraints"
        )
    if finite_differences:
        info = helpers.analyze(parametrization)
        if not info.deterministic:
            raise ValueError(
                f"{optimizer} estimates gradients by finite differences and needs a deterministic parametrization; "
                "this one samples its value (ng.p.Choice): use Choice(..., deterministic=True), or SNES, XNES or CMA-ES"
            )


def check_oracle_parametrization(parametrization: p.Parameter, oracle: tp.Any) -> None:
    """Refuses (``ValueError``) a parametrization that is not the oracle's: another dimension, not a plain
    ``ng.p.Array`` (bounds, a sigma other than 1), or another start (:func:`check_oracle_start`)."""
    dimension = oracle.parametrization.dimension
    if dimension != parametrization.dimension:
        raise ValueError(
            f"The oracle has {dimension} parameters but the optimizer's parametrization has "
            f"{parametrization.dimension}: build the optimizer on adapter.parametrization"
        )
    probe = parametrization.spawn_child().set_standardized_data(np.ones(dimension))
    zero = parametrization.spawn_child().set_standardized_data(np.zeros(dimension))
    if not isinstance(probe.value, np.ndarray) or not np.allclose(probe.value - zero.value, 1.0):
        raise ValueError(
            "An output oracle needs a plain ng.p.Array parametrization (no bounds, sigma 1): use adapter.parametrization"
        )
    check_oracle_start(parametrization, oracle)


def check_oracle_start(parametrization: p.Parameter, oracle: tp.Any) -> None:
    """Refuses a parametrization whose value is not where the oracle's parameters start.

    ``oracle`` is a model-aware objective (an adapter) with a ``parametrization`` whose
    value is the model's own parameters (``theta0``).  An optimizer built on another
    vector parametrization of the same size (typically ``parametrization=adapter.dimension``,
    which starts at zero) would drop the model's initialisation without a word.  Values
    that are not vectors of the oracle's shape are left to the objective, which refuses them.
    """
    mine = parametrization.value
    theirs = oracle.parametrization.value
    if not (isinstance(mine, np.ndarray) and isinstance(theirs, np.ndarray)) or mine.shape != theirs.shape:
        return
    if np.allclose(mine, theirs, rtol=1e-6, atol=1e-9):  # the same start, up to a float32 rounding
        return
    difference = float(np.max(np.abs(np.asarray(mine, dtype=np.float64) - theirs)))
    raise ValueError(
        f"The optimizer's parametrization starts at a vector of norm {np.linalg.norm(mine):.6g} but the objective's "
        f"parameters start at one of norm {np.linalg.norm(theirs):.6g} (dimension {theirs.size}, largest difference "
        f"{difference:.6g}): build the optimizer on parametrization=adapter.parametrization to start from the "
        "model's own parameters (to start elsewhere, load those parameters into the model before making the adapter)"
    )


def continuous_coordinates(parametrization: p.Parameter, probe: float = 1e-2) -> tp.Optional[np.ndarray]:
    """Which standardized coordinates move a continuous value (``None``: all of them).

    Coordinate ``j`` is continuous when a displacement of ``+-probe`` along it changes the
    value of a non-integer array of the parametrization; the coordinates of a
    ``TransitionChoice``, a deterministic ``Choice`` or an integer-cast array change only
    integer-valued parts, in steps, and are discrete.  One probe per coordinate, only for
    parametrizations that have discrete parts.
    """
    if helpers.analyze(parametrization).continuous:
        return None
    dimension = parametrization.dimension

    def continuous_values(data: np.ndarray) -> tp.List[np.ndarray]:
        child = parametrization.spawn_child().set_standardized_data(data)
        return [
            np.asarray(sub.value, dtype=np.float64)
            for _, sub in helpers.flatten(child)
            if isinstance(sub, p.Data) and not sub.integer
        ]

    origin = continuous_values(np.zeros(dimension))
    mask = np.zeros(dimension, dtype=bool)
    for j in range(dimension):
        for sign in (1.0, -1.0):
            data = np.zeros(dimension)
            data[j] = sign * probe
            if any(not np.array_equal(a, b) for a, b in zip(continuous_values(data), origin)):
                mask[j] = True
                break
    return mask


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
