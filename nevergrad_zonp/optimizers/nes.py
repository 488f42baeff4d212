"""Natural evolution strategies: SNES (separable) and xNES (full covariance).

Reference: D. Wierstra, T. Schaul, T. Glasmachers, Y. Sun, J. Peters and J. Schmidhuber,
"Natural Evolution Strategies", JMLR 15 (2014) 949-980, Algorithms 5 (xNES) and 6 (SNES).

Both search with a Gaussian in Nevergrad's standardized space, started at the origin
(the parametrization's initial value).  One generation draws ``lambda`` samples
``s_k ~ N(0, I)``, evaluates ``z_k = mu + A s_k``, sorts them by loss (best first) and
weights them with the rank utilities ``u_k`` of :func:`rank_utilities`.  The natural
gradient steps are then

* SNES, ``A = diag(sigma)``::

      mu    <- mu + eta_mu * sigma * sum_k u_k s_k
      sigma <- sigma * exp(eta_sigma / 2 * sum_k u_k (s_k**2 - 1))

* xNES, ``A = sigma B`` with ``det B = 1``::

      G_M     = sum_k u_k (s_k s_k^T - I),  G_sigma = tr(G_M) / n,  G_B = G_M - G_sigma I
      mu    <- mu + eta_mu * sigma * B sum_k u_k s_k
      sigma <- sigma * exp(eta_sigma / 2 * G_sigma)
      B     <- B expm(eta_B / 2 * G_B)

Defaults (paper, Table 1): ``lambda = 4 + floor(3 ln n)``, ``eta_mu = 1``,
``eta_sigma = (3 + ln n) / (5 sqrt n)`` for SNES and
``eta_sigma = eta_B = 3 (3 + ln n) / (5 n sqrt n)`` for xNES.
"""

from __future__ import annotations

import dataclasses
import math
import typing as tp

import numpy as np
from nevergrad.common import errors
from nevergrad.optimization import base
from nevergrad.parametrization import parameter as p

from nevergrad_zonp.optimizers.iterations import (
    CLIPPED_LOSS,
    IterationRequest,
    check_parametrization,
    plain_array_origin,
)
from nevergrad_zonp.optimizers.registration import register
from nevergrad_zonp.optimizers.resources import archive_pruning, available_memory_bytes, single_threaded_blas
from nevergrad_zonp._checks import check_choice, check_flag, check_integer, check_positive
from nevergrad_zonp.optimizers.settings import CheckedOptimizer

Covariance = tp.Literal["separable", "full"]

# n x n float64 matrices alive at once during an xNES update: B, G_M, the eigenvectors of
# G_B, expm(G_B) and the new B, plus about one more of LAPACK work space.
_FULL_COVARIANCE_MATRICES = 6


def rank_utilities(losses: np.ndarray) -> np.ndarray:
    """Fitness shaping: utility of each sample from its rank (paper, section 3.1).

    The sample of rank ``k`` (``k = 1`` the lowest loss) among ``lambda`` gets
    ``u_k = max(0, ln(lambda/2 + 1) - ln k) / sum_j max(0, ln(lambda/2 + 1) - ln j) - 1/lambda``,
    so the utilities sum to zero and only the better half pulls.  Tied losses share the
    mean utility of the ranks they span: a generation of equal losses (for instance all
    failed, clipped to ``CLIPPED_LOSS``) moves nothing (up to rounding).
    """
    losses = np.asarray(losses, dtype=np.float64)
    size = losses.size
    ranks = np.arange(1, size + 1)
    raw = np.maximum(0.0, math.log(size / 2 + 1) - np.log(ranks))
    by_rank = raw / raw.sum() - 1.0 / size
    _, inverse, counts = np.unique(losses, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (np.add.reduceat(by_rank, starts) / counts)[inverse]


@dataclasses.dataclass(frozen=True)
class NESConstants:
    """Strategy constants of one run: population ``lambda`` and the learning rates.

    ``eta_b`` is ``None`` for the separable variant, which has no ``B`` matrix.
    """

    popsize: int
    eta_mu: float
    eta_sigma: float
    eta_b: float | None

    @classmethod
    def defaults(cls, dimension: int, covariance: Covariance) -> "NESConstants":
        """The paper's defaults for dimension ``n`` (Table 1)."""
        log_n = math.log(dimension)
        popsize = 4 + int(math.floor(3 * log_n))
        if covariance == "separable":
            return cls(popsize, 1.0, (3 + log_n) / (5 * math.sqrt(dimension)), None)
        eta = 3 * (3 + log_n) / (5 * dimension * math.sqrt(dimension))
        return cls(popsize, 1.0, eta, eta)


def check_full_covariance_memory(dimension: int, available: int | None = None) -> int:
    """Bytes xNES needs at dimension ``n``; raises ``ValueError`` if they exceed ``available``.

    ``available`` defaults to :func:`available_memory_bytes`.  Called before allocating.
    """
    needed = _FULL_COVARIANCE_MATRICES * 8 * dimension**2
    available = available_memory_bytes() if available is None else available
    if needed > available:
        raise ValueError(
            f"xNES at dimension {dimension} needs {needed} bytes ({needed / 2**30:.2f} GiB: "
            f"{_FULL_COVARIANCE_MATRICES} dense {dimension} x {dimension} float64 matrices) but only "
            f"{available} bytes ({available / 2**30:.2f} GiB) are available: use SNES "
            "(covariance='separable') at this dimension."
        )
    return needed


class _NES(CheckedOptimizer):
    """SNES / xNES state and Nevergrad hooks.

    Generations: every ask samples from the current distribution and remembers its noise
    ``s`` by candidate uid.  The first ``lambda`` candidates told since the last update form
    the generation (tells may come in any order, and with ``num_workers > 1`` more than
    ``lambda`` may be asked).  After the update, candidates still out are stale: their later
    tell reaches Nevergrad's archive and best-point tracking but not the search distribution.

    Recommendation: the mean, unless the last completed generation had failed evaluations
    (NaN/inf, clipped by Nevergrad): then the mean may sit at the edge of a region where the
    objective is undefined, and the generation's best sample (a point seen finite) is
    recommended instead.  Linear algebra runs on one BLAS thread (:func:`single_threaded_blas`).
    """

    def __init__(
        self,
        parametrization: base.IntOrParameter,
        budget: int | None = None,
        num_workers: int = 1,
        *,
        config: "NaturalEvolutionStrategy | None" = None,
    ) -> None:
        super().__init__(parametrization, budget=budget, num_workers=num_workers)
        check_parametrization(self.parametrization, "NES (SNES, XNES)", finite_differences=False)
        self._config = NaturalEvolutionStrategy() if config is None else config
        self.constants = self._config.constants(self.dimension)
        full = self._config.covariance == "full"
        if full:
            check_full_covariance_memory(self.dimension)
        self._mean = np.zeros(self.dimension)
        sigma0 = self._config.sigma0
        self._sigma: float | np.ndarray = sigma0 if full else np.full(self.dimension, sigma0)
        self._shape = np.eye(self.dimension) if full else None
        self._pending: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._fallback: np.ndarray | None = None
        self._num_sampled = 0
        self._last_noise = np.zeros(self.dimension)
        self._told_noise: list[np.ndarray] = []
        self._told_data: list[np.ndarray] = []
        self._told_losses: list[float] = []
        self._num_generations = 0
        self._origin: np.ndarray | None = None  # value at standardized data 0 (plain Array only)
        # generation asked by ask_iteration and not told yet: the request and its noise
        self._requested: tuple[IterationRequest, np.ndarray] | None = None
        pruning = archive_pruning(self.dimension)
        if pruning is not None:
            self.pruning = pruning

    @property
    def iteration_size(self) -> int:
        """Population size ``lambda``: the candidates one generation evaluates."""
        return self.constants.popsize

    @property
    def mean(self) -> np.ndarray:
        """Current search mean ``mu`` in standardized space (a copy)."""
        return self._mean.copy()

    @property
    def sigma(self) -> float | np.ndarray:
        """Current step size: a scalar for xNES, one per coordinate for SNES (a copy)."""
        return np.array(self._sigma) if self._shape is None else float(self._sigma)

    @property
    def shape_matrix(self) -> np.ndarray | None:
        """xNES's ``B`` (``det B = 1``, covariance ``sigma^2 B B^T``); ``None`` for SNES."""
        return None if self._shape is None else self._shape.copy()

    def _sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Noise ``s`` and standardized data ``mu + A s`` of the next sample of the generation."""
        if self._config.mirrored and self._num_sampled % 2 == 1:
            noise = -self._last_noise
        else:
            noise = self._rng.randn(self.dimension)
        self._last_noise = noise
        self._num_sampled += 1
        with single_threaded_blas():
            step = self._sigma * (noise if self._shape is None else self._shape @ noise)
        return noise, self._mean + step

    def _internal_ask_candidate(self) -> p.Parameter:
        if not self._num_ask:  # a constraint registered after construction (the rest was checked then)
            check_parametrization(self.parametrization, "NES (SNES, XNES)", finite_differences=False)
        noise, data = self._sample()
        candidate = self.parametrization.spawn_child().set_standardized_data(data)
        self._pending[candidate.uid] = (noise, data)
        return candidate

    def _internal_tell_candidate(self, candidate: p.Parameter, loss: float) -> None:
        pending = self._pending.pop(candidate.uid, None)
        if pending is None:
            return
        self._told_noise.append(pending[0])
        self._told_data.append(pending[1])
        self._told_losses.append(loss if -math.inf < loss < CLIPPED_LOSS else CLIPPED_LOSS)  # NaN, -inf: failed
        if len(self._told_losses) == self.constants.popsize:
            self._update(np.array(self._told_noise), self._told_data, np.array(self._told_losses))

    def _update(self, noise: np.ndarray, data: tp.Sequence[np.ndarray], losses: np.ndarray) -> None:
        """The natural-gradient step of one generation (losses already clipped to ``CLIPPED_LOSS``)."""
        failed = losses >= CLIPPED_LOSS
        self._fallback = None
        if failed.any() and not failed.all():
            self._fallback = np.array(data[int(np.argmin(losses))], dtype=np.float64)
        utilities = rank_utilities(losses)
        with single_threaded_blas():
            if self._shape is None:
                self._update_separable(noise, utilities)
            else:
                self._update_full(noise, utilities, self._shape)
        self._pending.clear()
        self._told_data.clear()
        self._told_noise.clear()
        self._told_losses.clear()
        self._num_sampled = 0
        self._num_generations += 1

    # ----- generation-level fast path ------------------------------------------------
    @property
    def supports_iterations(self) -> bool:
        """Whether :meth:`ask_iteration` can be used (a plain ``ng.p.Array`` parametrization)."""
        if self._origin is None:
            self._origin = plain_array_origin(self.parametrization)
        return self._origin is not None

    @property
    def open_request(self) -> IterationRequest | None:
        """The generation asked with :meth:`ask_iteration` and not told yet (``None`` if there is none)."""
        return None if self._requested is None else self._requested[0]

    def ask_iteration(self) -> IterationRequest:
        """Asks a whole generation (``lambda`` samples) at once, without a Nevergrad candidate per sample.

        The request's ``theta`` is the parametrization's initial value, ``start`` 0 and
        ``deltas`` the samples' standardized data (shape ``(lambda, n)``): sample ``k`` is
        ``theta + deltas[k]``, the same value the per-candidate path would give.  Same
        random draws and updates as ``ask``/``tell`` for the same seed; ``num_ask`` and
        ``num_tell`` grow by ``lambda``; the samples do not enter Nevergrad's archive.  No
        sample asked through ``ask`` may be waiting for its tell at that moment; a
        generation partly told is completed by the request.
        With a budget, a generation that would pass it is cut to the queries left (its
        samples are told but make no update, as on the per-candidate path).

        One generation is open at a time: until it is told, ``ask_iteration`` returns the
        same request again (:attr:`open_request`), so an evaluation that raised is retried
        on the same samples and the run goes on as if it had not failed.  Its samples count
        once in ``num_ask``.  To give a generation up, tell it NaN losses (failed samples).
        """
        if not self.supports_iterations:
            raise TypeError("ask_iteration needs a plain ng.p.Array parametrization (no bounds, sigma 1); use ask/tell")
        if self._requested is not None:
            return self._requested[0]
        if self._pending:
            raise RuntimeError("samples asked through ask() are not told yet: tell them before ask_iteration()")
        count = self.constants.popsize - len(self._told_losses)  # completes a generation cut short before
        if self.budget is not None and 0 < self.budget - self.num_ask < count:
            count = self.budget - self.num_ask  # the rest of the budget, as the per-candidate loop asks it
        samples = [self._sample() for _ in range(count)]
        noise = np.array([sample[0] for sample in samples])
        data = np.array([sample[1] for sample in samples])
        self._num_ask += len(data)
        assert self._origin is not None
        index = self._num_generations
        request = IterationRequest(index=index, theta=self._origin.copy(), start=0, deltas=data, key=index)
        self._requested = (request, noise)
        return request

    def tell_iteration(self, request: IterationRequest, losses: tp.Any) -> None:
        """Tells the ``lambda`` losses of the generation asked by :meth:`ask_iteration` and updates.

        NaN, inf, -inf and losses above ``CLIPPED_LOSS`` count as failed (ranked last), as Nevergrad's
        clipping makes them on the per-candidate path.
        """
        values = np.asarray(losses, dtype=np.float64)
        if values.shape != (request.size,):
            raise ValueError(
                f"tell_iteration got losses of shape {values.shape}; the request has {request.size} samples: "
                f"expected shape ({request.size},)"
            )
        if self._requested is None or self._requested[0].index != request.index:
            raise ValueError(f"generation {request.index} is not the open generation asked with ask_iteration")
        request, noise = self._requested
        self._requested = None
        self._num_tell += len(values)
        clipped = np.where((values < CLIPPED_LOSS) & (values > -math.inf), values, CLIPPED_LOSS)  # NaN compares False: failed
        self._told_noise.extend(noise)
        self._told_data.extend(request.deltas)
        self._told_losses.extend(clipped.tolist())
        if len(self._told_losses) == self.constants.popsize:
            self._update(np.array(self._told_noise), self._told_data, np.array(self._told_losses))
        # else: a generation cut by the budget, kept (as partial tells are) until it is completed

    def _update_separable(self, noise: np.ndarray, utilities: np.ndarray) -> None:
        consts = self.constants
        self._mean = self._mean + consts.eta_mu * self._sigma * (utilities @ noise)
        self._sigma = self._sigma * np.exp(consts.eta_sigma / 2 * (utilities @ (noise**2 - 1)))

    def _update_full(self, noise: np.ndarray, utilities: np.ndarray, shape: np.ndarray) -> None:
        consts = self.constants
        assert consts.eta_b is not None
        identity = np.eye(self.dimension)
        grad_m = (noise.T * utilities) @ noise - utilities.sum() * identity
        grad_sigma = np.trace(grad_m) / self.dimension
        grad_b = grad_m - grad_sigma * identity
        self._mean = self._mean + consts.eta_mu * self._sigma * (shape @ (utilities @ noise))
        self._sigma = self._sigma * math.exp(consts.eta_sigma / 2 * grad_sigma)
        # G_B is symmetric: its eigendecomposition gives expm exactly (and real), cheaper than Pade.
        eigenvalues, eigenvectors = np.linalg.eigh(consts.eta_b / 2 * grad_b)
        self._shape = shape @ ((eigenvectors * np.exp(eigenvalues)) @ eigenvectors.T)

    def _internal_tell_not_asked(self, candidate: p.Parameter, loss: float) -> None:
        raise errors.TellNotAskedNotSupportedError(
            f"{self.name} only learns from the candidates it sampled (their noise is part of the update)"
        )

    def _internal_provide_recommendation(self) -> np.ndarray:
        return (self._mean if self._fallback is None else self._fallback).copy()


class NaturalEvolutionStrategy(base.ConfiguredOptimizer):
    """Natural evolution strategy (Wierstra et al., JMLR 2014): SNES or xNES.

    Rank-based fitness shaping (:func:`rank_utilities`) is always on: it makes the search
    invariant to monotone transforms of the loss and keeps failed evaluations (NaN/inf,
    clipped by Nevergrad to ``CLIPPED_LOSS``) from producing non-finite steps; they rank last.

    Parameters
    ----------
    covariance: "separable" or "full"
        "separable" is SNES (one step size per coordinate, O(n) memory and time per sample);
        "full" is xNES (``sigma B``, O(n^2) memory, O(n^3) per generation; refused with a
        ``ValueError`` when its matrices do not fit in memory).
    popsize: int or None
        population ``lambda`` per generation (>= 2); default ``4 + floor(3 ln n)``.  With
        ``mirrored=True`` an odd value is rounded up to the next even number.
    eta_mu: float
        learning rate of the mean (paper: 1).
    eta_sigma: float or None
        learning rate of the step size(s); default ``(3 + ln n) / (5 sqrt n)`` (SNES) or
        ``3 (3 + ln n) / (5 n sqrt n)`` (xNES).
    eta_b: float or None
        learning rate of xNES's shape matrix ``B``; default ``3 (3 + ln n) / (5 n sqrt n)``.
        Only for ``covariance="full"``.
    sigma0: float
        initial step size in Nevergrad's standardized space (for an ``ng.p.Array`` the value
        moves by ``sigma0`` times the Array's own sigma); the search starts at the
        parametrization's initial value.
    mirrored: bool
        mirrored sampling: samples come in pairs ``s, -s`` (variance reduction).
    """

    # pylint: disable=unused-argument
    def __init__(
        self,
        *,
        covariance: Covariance = "separable",
        popsize: int | None = None,
        eta_mu: float = 1.0,
        eta_sigma: float | None = None,
        eta_b: float | None = None,
        sigma0: float = 1.0,
        mirrored: bool = False,
    ) -> None:
        super().__init__(_NES, locals(), as_config=True)
        self.covariance = check_choice("covariance", covariance, ("separable", "full"))
        self.popsize = check_integer("popsize", popsize, 2, optional=True)
        if eta_b is not None and covariance != "full":
            raise ValueError("eta_b is the learning rate of xNES's B matrix: it needs covariance='full'")
        self.eta_mu = check_positive("eta_mu", eta_mu)
        self.eta_sigma = check_positive("eta_sigma", eta_sigma, optional=True)
        self.eta_b = check_positive("eta_b", eta_b, optional=True)
        self.sigma0 = check_positive("sigma0", sigma0)
        self.mirrored = check_flag("mirrored", mirrored)

    def constants(self, dimension: int) -> NESConstants:
        """The constants a run at ``dimension`` uses: the paper's defaults, then these settings."""
        defaults = NESConstants.defaults(dimension, self.covariance)
        popsize = defaults.popsize if self.popsize is None else self.popsize
        if self.mirrored:
            popsize += popsize % 2
        return NESConstants(
            popsize=popsize,
            eta_mu=self.eta_mu,
            eta_sigma=defaults.eta_sigma if self.eta_sigma is None else self.eta_sigma,
            eta_b=defaults.eta_b if self.eta_b is None else self.eta_b,
        )


SNES = register(NaturalEvolutionStrategy(covariance="separable"), "SNES")
XNES = register(NaturalEvolutionStrategy(covariance="full"), "XNES")
