"""HiZOO: zeroth-order directions scaled by a diagonal Hessian estimate, as a configuration of the ZO loop.

Zhao et al., "Second-Order Fine-Tuning without Pain for LLMs: A Hessian Informed
Zeroth-Order Optimizer", ICLR 2025, Algorithm 1, on one block of ``n`` coordinates per
iteration (docs/method.md, "Baselines"):

1. draw ``z_q ~ N(0, I)`` (``q = 1..Q``; rescaled to norm ``sqrt(n)`` by default, as the
   other samplers) and ask ``l_0 = l(theta)`` and ``l_q+- = l(theta +- h Sigma^(1/2) z_q)``,
   ``Sigma = D^-1``, ``h = mu / sqrt(n)``: ``2 Q + 1`` queries, one more per direction than
   a two-point estimate with a shared base point would need without the base loss;
2. update the diagonal curvature estimate
   ``D <- (1 - alpha) D + alpha |l_q+ + l_q- - 2 l_0| / (2 h^2) * D z_q^2`` (the diagonal of
   ``Sigma^(-1/2) z z^T Sigma^(-1/2)`` is ``D z^2``; averaged over the ``Q`` directions),
   starting from ``D = 1``;
3. estimate ``g = (lam / Q) sum_q (l_q+ - l_q-) / (2 h) Sigma^(1/2) z_q`` with the updated
   ``Sigma`` and step with the update rule.

The published method steps with SGD (``theta <- theta - lr g``, ``update="sgd"``, ``lam =
1``) and one direction per step; :data:`HIZOO_PAPER` is that configuration.  The default
steps with Adam, as this package's other ZO methods.  The authors' code keeps the
*covariance* in the smoothed estimate (perturbing by ``sqrt(D) z``); this module follows
the paper's equations, which smooth the inverse covariance.
"""

from __future__ import annotations

import collections
import hashlib
import typing as tp

import numpy as np
from nevergrad.optimization import base

from .._checks import check_fraction
from .blocks import block_bounds
from .loop import ZerothOrderLoop
from .parts import LoopParts
from .queries import CentralDifference
from .samplers import NormalStream, normalised
from .zeroth_order import apply_oracle_defaults, check_loop_settings, loop_parts

#: Smallest curvature kept (a flat objective drives ``D`` to 0 and ``D^-1/2`` to infinity).
CURVATURE_FLOOR = 1e-12


class HessianSampler:
    """HiZOO's directions ``u = D^-1/2 z`` from the smoothed diagonal curvature ``D`` (one number per coordinate)."""

    def __init__(
        self, bounds: np.ndarray, smoothing: float, *, normalize: bool = True, stream: str = "torch"
    ) -> None:
        self.bounds = np.asarray(bounds)
        self.curvature = np.ones(int(self.bounds[-1]))
        self.smoothing = smoothing
        self.normalize = normalize
        self.stream = NormalStream(stream)
        self.num_updates = 0
        self.last_curvature: tp.Optional[np.ndarray] = None

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """``(num, n)`` directions ``D^-1/2 z`` of the block (``z`` normalised to ``sqrt(n)`` if configured)."""
        size = stop - start
        if not num:
            return np.zeros((0, size))
        noise = np.asarray(self.stream.source(rng).normal(size=(num, size)), dtype=np.float64)
        if self.normalize:
            noise = normalised(noise, size)
        curvature = self.curvature[start:stop].copy()
        self.last_curvature = curvature  # the D of this draw (the design keeps it until the draw is told)
        return noise / np.sqrt(curvature)

    def restricted(self, directions: np.ndarray, continuous: np.ndarray) -> np.ndarray:
        """``directions`` with the discrete coordinates zeroed."""
        directions[:, ~continuous] = 0.0
        return directions

    def reset(self, block: int, start: int, stop: int) -> None:
        """Forgets the block's curvature after a recovery (``D = 1``): the path that built it was abandoned."""
        self.curvature[start:stop] = 1.0

    def covariance(self, block: int, size: int) -> np.ndarray:
        """``diag(D^-1)`` of the block's coordinates (before the normalisation of ``z``)."""
        start = int(self.bounds[block])
        return np.diag(1.0 / self.curvature[start : start + size])

    def update(
        self,
        start: int,
        stop: int,
        base_loss: float,
        plus: np.ndarray,
        minus: np.ndarray,
        noise: np.ndarray,
        step: float,
        at_draw: tp.Optional[np.ndarray] = None,
    ) -> bool:
        """Step 2 of the module docstring on ``[start, stop)``; ``False`` (and nothing changed) for a non-finite estimate.

        ``at_draw``: the ``D`` the directions were drawn with (default: the current one).
        """
        second = np.abs(plus + minus - 2.0 * base_loss) / (2.0 * step * step)
        current = self.curvature[start:stop]
        scale = current if at_draw is None else at_draw
        estimate = scale * ((second @ (noise * noise)) / len(second))
        if not np.all(np.isfinite(estimate)):
            return False
        blended = (1.0 - self.smoothing) * current + self.smoothing * estimate
        self.curvature[start:stop] = np.maximum(blended, CURVATURE_FLOOR)
        self.num_updates += 1
        return True


class HessianInformedDifference(CentralDifference):
    """The two-sided design whose estimate first updates the sampler's curvature (steps 2-3 of the module docstring).

    ``z_q`` is recovered from a told direction ``u_q = D^-1/2 z_q`` with the ``D`` it was
    drawn with, which the design keeps from the draw to the tell (an iteration asked ahead,
    with several workers, was drawn before the curvature moved on).
    """

    #: draws remembered until their tell (more open iterations than that fall back to the current ``D``)
    REMEMBERED = 1024

    def __init__(self, sampler: HessianSampler) -> None:
        self.sampler = sampler
        self._drawn: "collections.OrderedDict[bytes, np.ndarray]" = collections.OrderedDict()

    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()

    def rows(self, directions: np.ndarray) -> np.ndarray:
        curvature = self.sampler.last_curvature
        if curvature is not None and len(directions) and directions.shape[1] == len(curvature):
            for row in directions:
                self._drawn[self._key(row)] = curvature
            while len(self._drawn) > self.REMEMBERED:
                self._drawn.popitem(last=False)
        return super().rows(directions)

    def estimate(
        self, base_loss: float, losses: np.ndarray, rows: np.ndarray, step: float, lam: float, block: int, start: int, stop: int
    ) -> np.ndarray:
        plus, minus, directions = self.split(losses, rows)
        drawn = [self._drawn.pop(self._key(row), None) for row in directions]
        at_draw = next((curvature for curvature in drawn if curvature is not None), None)
        if at_draw is None:  # (a direction changed after its draw, e.g. by a mixed parametrization's probe)
            at_draw = self.sampler.curvature[start:stop].copy()
        noise = directions * np.sqrt(at_draw)  # z_q, the draws before the scaling
        self.sampler.update(start, stop, base_loss, plus, minus, noise, step, at_draw)
        slopes = (plus - minus) / (2 * step)
        return (lam / len(plus)) * (slopes @ noise) / np.sqrt(self.sampler.curvature[start:stop])


#: Default curvature smoothing ``alpha``, a value the HiZOO authors' scripts use (they offer 0, their
#: default, and 1e-12 ... 1e-2).  The estimate is multiplicative (``D`` scales its own update), so
#: a large ``alpha`` makes ``D`` grow geometrically wherever ``|l+ + l- - 2 l0| / (2 h^2) z^2 > 1``:
#: on the copying chip ``alpha = 1e-2`` took ``D`` to 1e8 (median) within 2,000 queries and the
#: runs diverged, ``1e-4`` to 1.5 and growing, ``1e-6`` kept it within 4 % of 1
#: (docs/results/frontier.md; ``comparisons/hizoo_smoothing.py``).
DEFAULT_HESSIAN_SMOOTHING = 1e-6


class HessianInformed(base.ConfiguredOptimizer):
    """HiZOO (ICLR 2025) in the block-wise ZO loop: two-sided queries along ``D^-1/2 z``, ``D`` a smoothed diagonal Hessian.

    See the module docstring for the iteration.  Settings shared with
    :class:`~nevergrad_zonp.ZerothOrder` mean the same there (``num_directions``, ``lr`` and
    its defaults, ``mu``, ``max_block_size``, ``block_selection``, ``normalize``,
    ``lr_schedule``, ``update``, ``direction_stream``); an iteration costs ``2 Q + 1``
    queries.

    Parameters
    ----------
    hessian_smoothing: float
        alpha in (0, 1] (default :data:`DEFAULT_HESSIAN_SMOOTHING`), the exponential
        smoothing of the curvature estimate.
    """

    def __init__(
        self,
        *,
        num_directions: int = 10,
        lr: tp.Optional[float] = None,
        mu: float = 1e-3,
        max_block_size: int = 512,
        block_selection: str = "random",
        normalize: bool = True,
        lr_schedule: tp.Optional[str] = None,
        update: str = "adam",
        direction_stream: str = "torch",
        hessian_smoothing: float = DEFAULT_HESSIAN_SMOOTHING,
    ) -> None:
        config = dict(locals())
        check_loop_settings(
            self, num_directions=num_directions, lr=lr, mu=mu, max_block_size=max_block_size,
            block_selection=block_selection, normalize=normalize, lr_schedule=lr_schedule, update=update,
            direction_stream=direction_stream,
        )
        self.hessian_smoothing = check_fraction("hessian_smoothing (alpha)", hessian_smoothing, zero=False)
        super().__init__(ZerothOrderLoop, config, as_config=True)

    def build_parts(self, dimension: int, budget: tp.Optional[int]) -> LoopParts:
        """The loop's parts: the curvature-scaled sampler, the two-sided design that updates it, the update rule."""
        bounds = block_bounds(dimension, self.max_block_size)
        sampler = HessianSampler(bounds, self.hessian_smoothing, normalize=self.normalize, stream=self.direction_stream)
        return loop_parts(self, dimension, bounds, sampler, queries=HessianInformedDifference(sampler))

    def oracle_defaults(self, parts: LoopParts) -> None:
        """As :meth:`ZerothOrder.oracle_defaults <nevergrad_zonp.ZerothOrder.oracle_defaults>`."""
        apply_oracle_defaults(parts, self.lr, self.update, self.lr_schedule)


#: HiZOO as published: plain SGD, one direction per step (3 queries), a constant learning rate.
HIZOO_PAPER: tp.Dict[str, tp.Any] = {"update": "sgd", "num_directions": 1, "lr_schedule": "constant"}
