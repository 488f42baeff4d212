"""The parts of the ZO loop (:mod:`.loop`): what each must provide, and the set a configuration builds.

A configuration (:class:`~nevergrad_zonp.ZerothOrder`, :class:`~nevergrad_zonp.learned.LearnedZO`,
or a new method) is a Nevergrad ``ConfiguredOptimizer`` of :class:`~.loop.ZerothOrderLoop`
with the two methods of :class:`LoopConfiguration`.  The loop calls its parts only through
the methods below; each part keeps its own state, which pickles with the optimizer.
"""

from __future__ import annotations

import dataclasses
import typing as tp

import numpy as np

from .fisher_schedule import FisherSchedule
from .queries import ForwardDifference, QueryDesign


@tp.runtime_checkable
class Sampler(tp.Protocol):
    """Draws the directions of an iteration (ZO-I, ZO-co, ZO-NP, the QueryRNN)."""

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """``(num, stop - start)`` directions for block ``block`` (``[start, stop)``), random numbers from ``rng``."""

    def restricted(self, directions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
        """``directions`` kept off the coordinates where ``continuous`` is false (may work in place)."""

    def reset(self, block: int, start: int, stop: int) -> None:
        """Forgets what the sampler learned of ``block`` on the abandoned path (after a recovery)."""

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The ``(size, size)`` covariance of the draws (before any normalisation), for inspection."""


@tp.runtime_checkable
class UpdateRule(tp.Protocol):
    """Moves one block of the iterate given the ZO estimate (Adam, SGD, sign SGD, the UpdateRNN)."""

    #: learning rate before the schedule (``None`` for a rule without one)
    lr: tp.Optional[float]
    #: whether the estimate it is given has ``lam = 1`` (else ``1 / n``)
    unbiased_estimate: bool
    #: whether an estimate formed at a point the iterate has left since (asked ahead) is used
    stale_estimates: bool

    def step(self, params: np.ndarray, grad: np.ndarray, block: int, start: int, stop: int, scale: float = 1.0) -> None:
        """Moves ``params[start:stop]`` in place; ``scale`` multiplies this step (schedule, recovery)."""

    def reset(self, block: int, start: int, stop: int) -> None:
        """Forgets the block's memory (moments, RNN state) after a recovery."""


@dataclasses.dataclass
class LoopParts:
    """What a configuration gives the loop: its sizes and its parts."""

    num_directions: int  #: Q >= 1, directions per iteration
    mu: float  #: norm of the finite-difference displacement (standardized space)
    bounds: np.ndarray  #: block ``b`` is ``[bounds[b], bounds[b + 1])``
    block_selection: str  #: ``"random"`` or ``"cyclic"``
    sampler: Sampler
    update: UpdateRule
    fisher: tp.Optional[FisherSchedule] = None  #: ZO-NP's Fisher refreshes
    lr_schedule: str = "constant"  #: ``"constant"`` or ``"cosine"`` (:data:`.loop.COSINE_FLOOR`)
    #: the points asked around the base point and the estimate from them (:mod:`.queries`)
    queries: QueryDesign = dataclasses.field(default_factory=ForwardDifference)
    #: a curvature source refreshed before the directions are drawn (LPP's layered Fisher), if any
    curvature: tp.Optional["CurvatureSource"] = None


@tp.runtime_checkable
class CurvatureSource(tp.Protocol):
    """Shapes a sampler from a model of the network (not from queries): LPP's layered Fisher."""

    def prepare(self, oracle: tp.Any, theta: tp.Callable[[], np.ndarray], block: int, start: int, stop: int) -> None:
        """Refreshes what the draws of ``block`` need, if due; ``theta()`` gives the iterate's parameter values."""


class LoopConfiguration(tp.Protocol):
    """What the loop asks of its configuration."""

    def build_parts(self, dimension: int, budget: tp.Optional[int]) -> LoopParts:
        """The parts for ``dimension`` parameters and a query ``budget`` (``None``: none)."""

    def oracle_defaults(self, parts: LoopParts) -> None:
        """Adjusts ``parts`` once an output oracle (a network's parameters) is attached."""
