"""Speed of the ZO optimizers through the model adapter (issue 2's benchmarks).

1. Vectorized evaluation (ask Q+1, one batched forward, tell) against one candidate at a
   time (Nevergrad's sequential ``minimize``), Q = 16, on the digits CNN: seconds per ZO
   iteration.  Goal: at least 5x fewer seconds per iteration vectorized.
2. ZONP against ZOI, seconds per query (Fisher Jacobian queries included), same model,
   T_ud = 100, vectorized path.  Goal: ZONP under 1.05x ZOI.

Run: ``python comparisons/bench_zo_speed.py`` (``--help`` for sizes).  Each measurement
is repeated and the median reported; the machine's load shows in the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

import nevergrad_zonp
from nevergrad_zonp.tasks.images import digits_task


def seconds(run, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def make(sampler: str, q: int, budget: int, seed: int = 0, fisher_period: int = 100):
    task = digits_task(seed=0)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="model", batch_size=100, seed=seed)
    opt = nevergrad_zonp.ZerothOrder(sampler=sampler, num_directions=q, lr=0.01, fisher_period=fisher_period)(
        parametrization=adapter.parametrization, budget=budget
    )
    opt.parametrization.random_state.seed(seed)
    return adapter, opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--q", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=60, help="ZO iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    q, iterations = args.q, args.iterations
    budget = iterations * (q + 1)
    print(f"torch {torch.__version__}, {args.threads} thread(s), digits CNN, Q = {q}, batch 100, {iterations} iterations/run")

    def vectorized():
        adapter, opt = make("isotropic", q, budget)
        nevergrad_zonp.minimize_vectorized(opt, adapter)

    def sequential():
        adapter, opt = make("isotropic", q, budget)
        opt.minimize(adapter)

    vec = seconds(vectorized, args.repeats)
    seq = seconds(sequential, args.repeats)
    v, s = statistics.median(vec) / iterations, statistics.median(seq) / iterations
    print("\n| path | s / iteration (median) | range | speed-up |")
    print("|---|---|---|---|")
    print(f"| one candidate at a time (minimize) | {s:.4f} | {min(seq) / iterations:.4f}-{max(seq) / iterations:.4f} | 1.0x |")
    print(f"| vectorized (minimize_vectorized) | {v:.4f} | {min(vec) / iterations:.4f}-{max(vec) / iterations:.4f} | {s / v:.1f}x |")

    # ZONP vs ZOI, seconds per query with T_ud = 100 over several Fisher refreshes
    long_budget = 4 * 100 * (q + 1) + 4 * 500
    results = {}
    for sampler in ["isotropic", "natural"]:
        per_query = []
        for _ in range(args.repeats):
            adapter, opt = make(sampler, q, long_budget)
            start = time.perf_counter()
            nevergrad_zonp.minimize_vectorized(opt, adapter)
            per_query.append((time.perf_counter() - start) / adapter.queries)
        results[sampler] = (per_query, adapter.queries, getattr(opt, "num_fisher_queries", 0))
    zoi, zonp = (statistics.median(results[k][0]) for k in ["isotropic", "natural"])
    print("\n| method | s / query (median) | range | queries | of which Jacobian | ratio to ZOI |")
    print("|---|---|---|---|---|---|")
    for name, key in [("ZOI", "isotropic"), ("ZONP", "natural")]:
        per_query, queries, jac = results[key]
        med = statistics.median(per_query)
        print(f"| {name} | {med * 1e3:.3f} ms | {min(per_query) * 1e3:.3f}-{max(per_query) * 1e3:.3f} | {queries} | {jac} | {med / zoi:.3f}x |")


if __name__ == "__main__":
    main()
