"""LPP: layered-parameter perturbations (AAAI 2025) as a configuration of the ZO loop.

Sawada, Aoyama and Notomi, "Layered-Parameter Perturbation for Zeroth-Order Optimization of
Optical Neural Networks", AAAI 2025, Algorithm 1 (docs/method.md, "Baselines"): each layer
``u`` (a Clements mesh) draws its part of a direction from

    Sigma_u = (1 + rho) (C_u + rho I)^-1,    C_u <- (1 - alpha) C_u + alpha F_u,  C_u = I at the start,

where ``F_u`` is the layer's own Fisher, evaluated on the *ideal* model from random inputs and
back-propagated random output perturbations (:mod:`nevergrad_zonp.adapters.layered`; no
query of the chip), refreshed every ``T_ud`` uses of the layer.  Each layer's part of a draw
is rescaled to a root mean square of 1, as in the authors' code; the other parameters (the
modReLU biases, the embeddings) keep isotropic directions.  Defaults are the paper's:
``rho = 0.1``, ``alpha = 0.01``, ``T_ud = 100``, ``R_in = R_out = 100``.

In this loop an iteration perturbs one block of coordinates (as every ZO method of the
package), where the paper perturbs every parameter at once: a block draws from the marginal
of the layers' Gaussians on its coordinates (a layer cut by a block boundary contributes the
sub-block of its covariance).  Everything else is the forward-difference ZO loop, with Adam.
"""

from __future__ import annotations

import typing as tp
import warnings

import numpy as np
from nevergrad.optimization import base

from .._checks import check_fraction, check_integer, check_positive
from .blocks import block_bounds
from .loop import ZerothOrderLoop
from .parts import LoopParts
from .samplers import NormalStream, _GaussianDraws, normalised
from .zeroth_order import apply_oracle_defaults, check_loop_settings, loop_parts


class LayeredPerturbationsInactiveWarning(UserWarning):
    """LPP runs without an oracle that has layers (``layer_spans``/``layer_fisher``): it behaves as block ZO-I."""


@tp.runtime_checkable
class LayeredOracle(tp.Protocol):
    """What LPP needs of an oracle: :meth:`nevergrad_zonp.ModelAdapter.layer_spans` and ``layer_fisher``."""

    def layer_spans(self) -> tp.Sequence[tp.Tuple[int, int]]: ...

    def layer_fisher(self, theta: tp.Any, layer: int, *, inputs: int, draws: int, seed: int) -> np.ndarray: ...


class LayeredSampler(_GaussianDraws):
    """Directions whose parts on each layer are drawn from ``N(0, Sigma_u)`` (module docstring), the rest ``N(0, I)``.

    Restricting to continuous coordinates and forgetting after a recovery (nothing: the
    Fisher describes the ideal model, not the path) are the Gaussian samplers'.
    """

    def __init__(
        self, bounds: np.ndarray, damping: float, smoothing: float, *, normalize: bool = True, stream: str = "torch"
    ) -> None:
        self.bounds = np.asarray(bounds)
        self.damping = damping
        self.smoothing = smoothing
        self.normalize = normalize
        self.stream = NormalStream(stream)
        self.spans: tp.List[tp.Tuple[int, int]] = []
        self.blends: tp.Dict[int, np.ndarray] = {}  # C_u of the refreshed layers
        self.covariances: tp.Dict[int, np.ndarray] = {}  # Sigma_u of the refreshed layers
        self._factors: tp.Dict[tp.Tuple[int, int, int], np.ndarray] = {}  # (layer, lo, hi) -> Cholesky factor of the marginal

    def set_layers(self, spans: tp.Sequence[tp.Tuple[int, int]]) -> None:
        """The layers' spans in the flat vector (sorted, disjoint)."""
        self.spans = [(int(a), int(b)) for a, b in spans]

    def update(self, layer: int, fisher: np.ndarray) -> bool:
        """Blends a new ``F_u`` into ``C_u`` and recomputes ``Sigma_u``; ``False`` (nothing changed) if it is unusable."""
        start, stop = self.spans[layer]
        size = stop - start
        if fisher.shape != (size, size) or not np.all(np.isfinite(fisher)):
            return False
        previous = self.blends.get(layer)
        blend = (1 - self.smoothing) * (np.eye(size) if previous is None else previous) + self.smoothing * fisher
        blend = 0.5 * (blend + blend.T)
        try:
            factor = np.linalg.cholesky(blend + self.damping * np.eye(size))
        except np.linalg.LinAlgError:
            return False
        inverse = np.linalg.solve(factor, np.eye(size))
        self.blends[layer] = blend
        self.covariances[layer] = (1 + self.damping) * (inverse.T @ inverse)
        for key in [key for key in self._factors if key[0] == layer]:
            del self._factors[key]
        return True

    def overlaps(self, start: int, stop: int) -> tp.Iterator[tp.Tuple[int, int, int]]:
        """``(layer, lo, hi)`` for every layer overlapping ``[start, stop)`` on ``[lo, hi)``."""
        for layer, (a, b) in enumerate(self.spans):
            lo, hi = max(a, start), min(b, stop)
            if lo < hi:
                yield layer, lo, hi

    def _factor(self, layer: int, lo: int, hi: int) -> tp.Optional[np.ndarray]:
        covariance = self.covariances.get(layer)
        if covariance is None:
            return None
        key = (layer, lo, hi)
        factor = self._factors.get(key)
        if factor is None:
            offset = self.spans[layer][0]
            factor = np.linalg.cholesky(covariance[lo - offset : hi - offset, lo - offset : hi - offset])
            self._factors[key] = factor
        return factor

    def draw(self, rng: np.random.RandomState, block: int, start: int, stop: int, num: int) -> np.ndarray:
        """``(num, n)`` directions of the block ``[start, stop)`` (module docstring)."""
        size = stop - start
        if not num:
            return np.zeros((0, size))
        directions = np.asarray(self.stream.source(rng).normal(size=(num, size)), dtype=np.float64)
        for layer, lo, hi in self.overlaps(start, stop):
            part = directions[:, lo - start : hi - start]
            factor = self._factor(layer, lo, hi)
            if factor is not None:
                part = part @ factor.T
            rms = np.sqrt(np.mean(part * part, axis=1, keepdims=True))
            directions[:, lo - start : hi - start] = part / np.maximum(rms, np.finfo(float).tiny)
        return normalised(directions, size) if self.normalize else directions

    def covariance(self, block: int, size: int) -> np.ndarray:
        """The covariance of the block's draws before the rescaling: the layers' marginals, ``I`` elsewhere."""
        start = int(self.bounds[block])
        covariance = np.eye(size)
        for layer, lo, hi in self.overlaps(start, start + size):
            full = self.covariances.get(layer)
            if full is not None:
                offset = self.spans[layer][0]
                covariance[lo - start : hi - start, lo - start : hi - start] = full[lo - offset : hi - offset, lo - offset : hi - offset]
        return covariance

    def layer_covariance(self, layer: int) -> np.ndarray:
        """``Sigma_u`` of layer ``layer`` (``I`` before its first refresh), before the rescaling of its draws."""
        start, stop = self.spans[layer]
        covariance = self.covariances.get(layer)
        return np.eye(stop - start) if covariance is None else covariance.copy()


class LayeredSchedule:
    """Refreshes a layer's Fisher at its first use and every ``period`` uses (:class:`~.parts.CurvatureSource`)."""

    def __init__(self, sampler: LayeredSampler, period: int, inputs: int, draws: int) -> None:
        self.sampler = sampler
        self.period = period
        self.inputs = inputs
        self.draws = draws
        self.uses: tp.Dict[int, int] = {}
        self.num_refreshes = 0
        self.num_rejected = 0
        self._layers_known = False
        self._warned = False

    def prepare(self, oracle: tp.Any, theta: tp.Callable[[], np.ndarray], block: int, start: int, stop: int) -> None:
        """Counts a use of every layer the block overlaps and refreshes those that are due."""
        if not isinstance(oracle, LayeredOracle):
            if not self._warned:
                self._warned = True
                warnings.warn(
                    "LPP has no oracle with layers (a nevergrad_zonp.ModelAdapter): layered perturbations are inactive "
                    "and it runs as block ZO-I",
                    LayeredPerturbationsInactiveWarning,
                    stacklevel=4,
                )
            return
        if not self._layers_known:
            self.sampler.set_layers(oracle.layer_spans())
            self._layers_known = True
        values: tp.Optional[np.ndarray] = None
        for layer, _, _ in self.sampler.overlaps(start, stop):
            uses = self.uses.get(layer, 0)
            self.uses[layer] = uses + 1
            if uses % self.period:
                continue
            values = theta() if values is None else values
            fisher = oracle.layer_fisher(values, layer, inputs=self.inputs, draws=self.draws, seed=self.num_refreshes)
            self.num_refreshes += 1
            if not self.sampler.update(layer, np.asarray(fisher, dtype=np.float64)):
                self.num_rejected += 1


class LayeredPerturbation(base.ConfiguredOptimizer):
    """LPP (AAAI 2025) in the block-wise ZO loop: directions shaped per layer by the ideal model's layer Fishers.

    See the module docstring.  Needs a :class:`~nevergrad_zonp.ModelAdapter` (attached by
    ``minimize``, or with ``attach``) for its layers; without one it runs as block ZO-I and
    warns.  Settings shared with :class:`~nevergrad_zonp.ZerothOrder` mean the same there
    (``rho`` is LPP's ``rho``); an iteration costs ``Q + 1`` queries, the layer Fishers none.

    Parameters
    ----------
    layer_period: int
        T_ud >= 1 (default 100): uses of a layer between refreshes of its Fisher.
    layer_smoothing: float
        alpha in (0, 1] (default 0.01): ``C_u <- (1 - alpha) C_u + alpha F_u``.
    layer_inputs, layer_draws: int
        R_in and R_out (default 100 each): random inputs of a layer, and random output
        perturbations per input, of one Fisher estimate.
    """

    def __init__(
        self,
        *,
        num_directions: int = 10,
        lr: tp.Optional[float] = None,
        mu: float = 1e-3,
        rho: float = 0.1,
        max_block_size: int = 512,
        block_selection: str = "random",
        normalize: bool = True,
        lr_schedule: tp.Optional[str] = None,
        update: str = "adam",
        direction_stream: str = "torch",
        layer_period: int = 100,
        layer_smoothing: float = 0.01,
        layer_inputs: int = 100,
        layer_draws: int = 100,
    ) -> None:
        config = dict(locals())
        check_loop_settings(
            self, num_directions=num_directions, lr=lr, mu=mu, max_block_size=max_block_size,
            block_selection=block_selection, normalize=normalize, lr_schedule=lr_schedule, update=update,
            direction_stream=direction_stream,
        )
        self.rho = check_positive("rho", rho)
        self.layer_period = check_integer("layer_period", layer_period)
        self.layer_smoothing = check_fraction("layer_smoothing (alpha)", layer_smoothing, zero=False)
        self.layer_inputs = check_integer("layer_inputs", layer_inputs)
        self.layer_draws = check_integer("layer_draws", layer_draws)
        super().__init__(ZerothOrderLoop, config, as_config=True)

    def build_parts(self, dimension: int, budget: tp.Optional[int]) -> LoopParts:
        """The loop's parts: the layered sampler, its Fisher schedule, the update rule."""
        bounds = block_bounds(dimension, self.max_block_size)
        sampler = LayeredSampler(bounds, self.rho, self.layer_smoothing, normalize=self.normalize, stream=self.direction_stream)
        schedule = LayeredSchedule(sampler, self.layer_period, self.layer_inputs, self.layer_draws)
        return loop_parts(self, dimension, bounds, sampler, curvature=schedule)

    def oracle_defaults(self, parts: LoopParts) -> None:
        """As :meth:`ZerothOrder.oracle_defaults <nevergrad_zonp.ZerothOrder.oracle_defaults>`."""
        apply_oracle_defaults(parts, self.lr, self.update, self.lr_schedule)
