"""CMA-ES baselines configured for query-matched comparisons with the ZO optimizers.

CMA-ES: N. Hansen and A. Ostermeier, "Completely derandomized self-adaptation in evolution
strategies", Evolutionary Computation 9(2) (2001); separable CMA-ES: R. Ros and N. Hansen,
"A simple modification in CMA-ES achieving linear time and space complexity", PPSN X (2008).
Both run through Nevergrad's wrapper of the ``cma`` package (``ParametrizedCMA``), not the
``ng.optimizers.CMA`` selector, which switches between configurations by dimension and
budget (DESIGN.md section 4).

A ZO iteration with ``Q`` directions costs ``Q + 1`` queries on one mini-batch, so the
presets use a population ``lambda = Q + 1``: one CMA generation, evaluated on one
mini-batch, costs the same as one ZO iteration.
"""

from __future__ import annotations

import typing as tp

import numpy as np
from nevergrad.optimization import base
from nevergrad.optimization.optimizerlib import ParametrizedCMA, _CMA

RECOMMENDATIONS = ("mean", "best")


class _MeanRecommendingCMA(_CMA):
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
    if num_directions < 1:
        raise ValueError(f"num_directions (Q) must be at least 1, got {num_directions}")
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be positive, got {sigma0}")
    if recommendation not in RECOMMENDATIONS:
        raise ValueError(f"recommendation must be one of {RECOMMENDATIONS}, got {recommendation!r}")
    kind = "diagonal" if diagonal else "full"
    configured = ParametrizedCMA(popsize=num_directions + 1, scale=sigma0, diagonal=diagonal)
    if recommendation == "mean":  # same configuration, same ``cma`` runs; only the recommendation differs
        configured._OptimizerClass = _MeanRecommendingCMA
    return configured.set_name(
        f"CMA-ES({kind}, popsize={num_directions + 1}, sigma0={sigma0:g}, recommends {recommendation})"
    )


def population_size(optimizer: base.Optimizer) -> int:
    """Candidates per generation of an instantiated optimizer.

    Optimizers of this package expose ``iteration_size`` (NES: ``lambda``; the ZO
    optimizers: ``Q + 1``).  For Nevergrad's CMA-ES it is the population handed to ``cma``,
    ``max(popsize, num_workers)``.
    """
    size = getattr(optimizer, "iteration_size", None)
    if size is not None:
        return int(size)
    if isinstance(optimizer, _CMA):
        return int(optimizer._popsize)
    raise TypeError(f"{optimizer.name} has no known population size (no iteration_size, not CMA-ES)")
