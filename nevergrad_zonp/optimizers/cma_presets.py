"""CMA-ES baselines configured for query-matched comparisons with the ZO optimizers.

CMA-ES: N. Hansen and A. Ostermeier, "Completely derandomized self-adaptation in evolution
strategies", Evolutionary Computation 9(2) (2001); separable CMA-ES: R. Ros and N. Hansen,
"A simple modification in CMA-ES achieving linear time and space complexity", PPSN X (2008).
Both run through Nevergrad's wrapper of the ``cma`` package (``ParametrizedCMA``), not the
``ng.optimizers.CMA`` selector, which switches between configurations by dimension and
budget (docs/method.md, "Baselines").

A ZO iteration with ``Q`` directions costs ``Q + 1`` queries on one mini-batch, so the
presets use a population ``lambda = Q + 1``: one CMA generation, evaluated on one
mini-batch, costs the same as one ZO iteration.
"""

from __future__ import annotations

import typing as tp

import numpy as np
from nevergrad.optimization import base
from nevergrad.optimization.optimizerlib import ParametrizedCMA, _CMA

from .iterations import CLIPPED_LOSS, IterationRequest, plain_array_origin
from .._checks import check_choice, check_flag, check_integer, check_positive
from .settings import CheckedOptimizer

RECOMMENDATIONS = ("mean", "best")


class _PresetCMA(CheckedOptimizer, _CMA):
    """Nevergrad's CMA-ES with the checks of this package's optimizers (budget, ``num_workers``, one loss per tell)."""


class _MeanRecommendingCMA(_PresetCMA):
    """Nevergrad's CMA-ES, recommending the search distribution's mean.

    The mean is recorded after every completed generation, so a restart of ``cma`` (a new
    strategy at the origin, whose mean has not moved yet) does not reset the recommendation.
    """

    _mean: tp.Optional[np.ndarray] = None  # until a generation completes: the initial point

    def _internal_tell_candidate(self, candidate: tp.Any, loss: tp.FloatLoss) -> None:
        super()._internal_tell_candidate(candidate, loss)
        es = self._es
        if es is not None and es.countiter > 0:
            self._mean = np.array(es.mean, dtype=float)

    def _internal_provide_recommendation(self) -> np.ndarray:
        return np.zeros(self.dimension) if self._mean is None else self._mean.copy()

    # ----- generation-level fast path ------------------------------------------------
    _origin: tp.Optional[np.ndarray] = None
    _requested: tp.Optional[IterationRequest] = None  # the generation asked by ask_iteration, not told yet
    _num_requests: int = 0

    @property
    def supports_iterations(self) -> bool:
        """Whether :meth:`ask_iteration` can be used (a plain ``ng.p.Array``, ``cma`` not ``fcmaes``)."""
        if self._config.fcmaes:
            return False
        if self._origin is None:
            self._origin = plain_array_origin(self.parametrization)
        return self._origin is not None

    @property
    def open_request(self) -> tp.Optional[IterationRequest]:
        """The generation asked with :meth:`ask_iteration` and not told yet (``None`` if there is none)."""
        return self._requested

    def ask_iteration(self) -> IterationRequest:
        """Asks a whole generation at once, without a Nevergrad candidate per sample.

        The request's ``theta`` is the parametrization's initial value, ``start`` 0 and
        ``deltas`` the ``cma`` samples (standardized data, shape ``(popsize, n)``).  The
        same ``cma`` draws, tells and restarts as Nevergrad's per-candidate ``ask``/``tell``
        for the same seed; ``num_ask`` and ``num_tell`` grow by the population; the samples
        do not enter Nevergrad's archive (the recommendation is the mean, not the archive's
        best).  No candidate asked with ``ask`` may be waiting for its tell.  A generation
        that would pass the budget is cut to the queries left and never told to ``cma``,
        as on the per-candidate path.

        One generation is open at a time: until it is told, ``ask_iteration`` returns the
        same request again (:attr:`open_request`), so an evaluation that raised is retried
        on the same samples and the run goes on as if it had not failed.  Its samples count
        once in ``num_ask``.  To give a generation up, tell it NaN losses (failed samples).
        """
        if not self.supports_iterations:
            raise TypeError("ask_iteration needs a plain ng.p.Array parametrization and cma (not fcmaes); use ask/tell")
        if self._requested is not None:
            return self._requested
        if self._to_be_told or self._to_be_asked:
            raise RuntimeError("candidates asked through ask() are not told yet: tell them before ask_iteration()")
        samples = np.array(self.es.ask(), dtype=float)
        count = len(samples)
        if self.budget is not None and 0 < self.budget - self.num_ask < count:
            count = self.budget - self.num_ask
        assert self._origin is not None
        index = self._num_requests
        self._num_requests += 1
        self._num_ask += count
        deltas = samples[:count]
        self._requested = IterationRequest(index=index, theta=self._origin.copy(), start=0, deltas=deltas, key=index)
        return self._requested

    def tell_iteration(self, request: IterationRequest, losses: tp.Any) -> None:
        """Tells the losses of the generation asked by :meth:`ask_iteration` and updates ``cma``.

        NaN, inf and losses of at least ``5e20`` are clipped to ``5e20``, as Nevergrad's ``tell`` does.
        """
        values = np.asarray(losses, dtype=np.float64)
        if values.shape != (request.size,):
            raise ValueError(
                f"tell_iteration got losses of shape {values.shape}; the request has {request.size} samples: "
                f"expected shape ({request.size},)"
            )
        if self._requested is None or self._requested.index != request.index:
            raise ValueError(f"generation {request.index} is not the open generation asked with ask_iteration")
        samples = self._requested.deltas
        self._requested = None
        self._num_tell += len(values)
        clipped = np.where(values < CLIPPED_LOSS, values, CLIPPED_LOSS)  # NaN compares False: clipped
        es = self.es
        if len(values) < es.popsize:
            return  # a generation cut by the budget: never told to cma, as on the per-candidate path
        # Nevergrad tells cma each candidate's standardized data read back from its value.
        assert self._origin is not None
        data = (self._origin[None] + samples) - self._origin[None]
        try:
            es.tell(list(data), clipped.tolist())
        except (RuntimeError, AssertionError):
            return
        if es.countiter > 0:
            self._mean = np.array(es.mean, dtype=float)


def cma_es(
    num_directions: int, sigma0: float = 1.0, diagonal: bool = False, recommendation: str = "mean"
) -> base.ConfiguredOptimizer:
    """Plain (mu/mu_w, lambda)-CMA-ES with ``lambda = num_directions + 1`` (``Q + 1``).

    ``diagonal=False`` adapts a full covariance matrix (O(n^2) memory, for small n);
    ``diagonal=True`` is separable CMA-ES (``cma`` option ``CMA_diagonal=True``: diagonal
    covariance for the whole run, O(n) per sample), the one to use at large n.

    Step size: the search starts at the parametrization's initial value (standardized
    origin) with ``cma``'s ``sigma0 = sigma0`` in Nevergrad's standardized space, i.e. a
    value-space step of ``sigma0`` times the ``ng.p.Array``'s own sigma.  Nevergrad shrinks
    it by 0.3 (n < 18) or 0.15 for fully bounded parametrizations; the harness's unbounded
    arrays keep it as is.  Otherwise the ``cma`` defaults apply (recombination weights,
    learning rates, stopping tests; Nevergrad restarts ``cma`` from the origin when one of
    its stopping tests fires).

    Recommendation: ``"mean"`` (default) is the search distribution's mean after the last
    completed generation, the counterpart of the NES mean and of the ZO iterate;
    ``"best"`` is Nevergrad's default, ``cma``'s best evaluated point (``es.result.xbest``).
    On mini-batch losses the best evaluated point is the one whose batch was kindest to
    it, and it can date from an earlier restart, so the comparisons use the mean.
    """
    num_directions = check_integer("num_directions (Q)", num_directions)
    check_positive("sigma0", sigma0)
    diagonal = check_flag("diagonal", diagonal)
    check_choice("recommendation", recommendation, RECOMMENDATIONS)
    kind = "diagonal" if diagonal else "full"
    configured = ParametrizedCMA(popsize=num_directions + 1, scale=sigma0, diagonal=diagonal)
    # same configuration, same ``cma`` runs; only the recommendation differs
    configured._OptimizerClass = _MeanRecommendingCMA if recommendation == "mean" else _PresetCMA
    return configured.set_name(
        f"CMA-ES({kind}, popsize={num_directions + 1}, sigma0={sigma0:g}, recommends {recommendation})"
    )

