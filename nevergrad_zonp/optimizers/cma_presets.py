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

from nevergrad.optimization import base
from nevergrad.optimization.optimizerlib import ParametrizedCMA, _CMA


def cma_es(num_directions: int, sigma0: float = 1.0, diagonal: bool = False) -> base.ConfiguredOptimizer:
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
    its stopping tests fires).  The recommendation is ``cma``'s best evaluated point
    (``es.result.xbest``), not its mean.
    """
    if num_directions < 1:
        raise ValueError(f"num_directions (Q) must be at least 1, got {num_directions}")
    if not sigma0 > 0:
        raise ValueError(f"sigma0 must be positive, got {sigma0}")
    kind = "diagonal" if diagonal else "full"
    return ParametrizedCMA(popsize=num_directions + 1, scale=sigma0, diagonal=diagonal).set_name(
        f"CMA-ES({kind}, popsize={num_directions + 1}, sigma0={sigma0:g})"
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
