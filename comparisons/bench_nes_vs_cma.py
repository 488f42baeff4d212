"""Evaluations to reach f <= 1e-8: SNES and xNES against full and separable CMA-ES.

Every method runs through its Nevergrad optimizer (``SNES``, ``XNES`` from
:mod:`nevergrad_zonp.optimizers.nes`; the ``cma`` package through
:func:`nevergrad_zonp.optimizers.cma_presets.cma_es`, full and diagonal), generation by
generation (ask a population, evaluate, tell), on three 10-D functions:

* sphere ``sum x_i^2``;
* ellipsoid ``sum 10^(6 (i-1)/(n-1)) x_i^2`` (axis-aligned, condition number 1e6);
* Rosenbrock ``sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``.

Same setting for all methods: the search starts at ``x0 ~ U[-2, 2]^n`` drawn from the seed
(the same ``x0`` for every method at a given seed), with step size ``sigma0`` (default 1, the
package's default) in standardized space, which is value space here (``ng.p.Array(init=x0)``).
All use the NES default population ``4 + floor(3 ln n)`` (10 at n = 10, also ``cma``'s
default), i.e. CMA-ES presets with ``Q = popsize - 1``.  A run succeeds when an evaluated
point has ``f <= target``; it counts the evaluations up to that point.  Runs stop unsolved
after ``--max-evals`` evaluations.

Usage: ``python comparisons/bench_nes_vs_cma.py [--dimension 10] [--seeds 5]
[--target 1e-8] [--max-evals 50000] [--sigma0 1.0]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import typing as tp

import nevergrad as ng
import numpy as np
from nevergrad.optimization import base

from nevergrad_zonp.functions import ellipsoid, rosenbrock, run_to_target, sphere
from nevergrad_zonp.optimizers import nes
from nevergrad_zonp.optimizers.cma_presets import cma_es




FUNCTIONS: dict[str, tp.Callable[[np.ndarray], float]] = {
    "sphere": sphere,
    "ellipsoid (cond 1e6)": ellipsoid,
    "Rosenbrock": rosenbrock,
}


def methods(dimension: int, sigma0: float) -> dict[str, base.ConfiguredOptimizer]:
    popsize = nes.NESConstants.defaults(dimension, "separable").popsize
    return {
        "SNES": nes.NaturalEvolutionStrategy(covariance="separable", sigma0=sigma0),
        "xNES": nes.NaturalEvolutionStrategy(covariance="full", sigma0=sigma0),
        "CMA-ES (full)": cma_es(popsize - 1, sigma0=sigma0),
        "sep-CMA-ES (diagonal)": cma_es(popsize - 1, sigma0=sigma0, diagonal=True),
    }


def evaluations_to_target(
    configured: base.ConfiguredOptimizer,
    function: tp.Callable[[np.ndarray], float],
    x0: np.ndarray,
    seed: int,
    target: float,
    max_evals: int,
) -> tuple[int | None, float]:
    """(evaluations until an evaluated ``f <= target``, or None; best ``f`` seen)."""
    parametrization = ng.p.Array(init=x0)
    parametrization.random_state.seed(seed)
    return run_to_target(configured(parametrization), function, target, max_evals)


def summary_row(function: str, method: str, results: list[tuple[int | None, float]]) -> str:
    solved = [evals for evals, _ in results if evals is not None]
    unsolved = [best for evals, best in results if evals is None]
    cells = [function, method, f"{len(solved)}/{len(results)}"]
    if solved:
        cells += [f"{int(np.median(solved))}", f"{min(solved)}-{max(solved)}"]
    else:
        cells += ["-", "-"]
    cells.append(f"{np.median(unsolved):.2g}" if unsolved else "-")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dimension", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--target", type=float, default=1e-8)
    parser.add_argument("--max-evals", type=int, default=50_000)
    parser.add_argument("--sigma0", type=float, default=1.0)
    args = parser.parse_args()

    configured = methods(args.dimension, args.sigma0)
    starts = [np.random.RandomState(seed).uniform(-2, 2, size=args.dimension) for seed in range(args.seeds)]
    print(
        f"n = {args.dimension}, seeds 0-{args.seeds - 1}, x0 ~ U[-2, 2]^n, sigma0 = {args.sigma0}, "
        f"target f <= {args.target:g}, at most {args.max_evals} evaluations\n"
    )
    print("| function | method | solved | median evals | range | median best f (unsolved) |")
    print("|---|---|---|---|---|---|")
    for function_name, function in FUNCTIONS.items():
        for method_name, optimizer in configured.items():
            start = time.perf_counter()
            results = [
                evaluations_to_target(optimizer, function, x0, seed, args.target, args.max_evals)
                for seed, x0 in enumerate(starts)
            ]
            print(summary_row(function_name, method_name, results), flush=True)
            print(f"{function_name} / {method_name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
