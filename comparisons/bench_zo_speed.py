"""Speed of the ZO optimizers through the model adapter (issue 2's benchmarks).

1. Vectorized evaluation (ask Q+1, one batched forward, tell) against one candidate at a
   time (Nevergrad's sequential ``minimize``), Q = 16, on the digits CNN: seconds per ZO
   iteration.  Goal: at least 5x fewer seconds per iteration vectorized.
2. ZONP against ZOI, seconds per query (Fisher Jacobian queries included), same model,
   T_ud = 100, vectorized path.  Goal: ZONP under 1.05x ZOI.

Part 1 also decomposes the vectorized iteration into the batched forward of its ``Q + 1``
settings (per block, since an iteration perturbs one block) and Nevergrad's ask + tell,
and reports the ceiling of the speed-up: one-at-a-time seconds over the forward alone,
i.e. what vectorizing could give with zero optimizer overhead.  When the first conv
layer is perturbed every layer runs for every setting, and on a CPU that forward costs
about as much batched as looped: the speed-up there is bounded by the compute, not by the
loop.

Run: ``python comparisons/bench_zo_speed.py`` (``--help`` for sizes).  Each measurement
is repeated and the median reported; the machine's load shows in the spread.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import nevergrad_zonp
from nevergrad_zonp.optimizers.blocks import block_bounds
from nevergrad_zonp.tasks.images import digits_task


def seconds(run, repeats: int, setup=None) -> list[float]:
    """Wall-clock seconds of ``run()`` (or ``run(*setup())``, with ``setup`` untimed), per repeat."""
    times = []
    for _ in range(repeats):
        args = setup() if setup is not None else ()
        start = time.perf_counter()
        run(*args)
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


def decompose(q: int, repeats: int, sequential: float, vectorized: float) -> None:
    """Where the vectorized iteration's time goes: batched forward per block, ask + tell."""
    adapter, opt = make("isotropic", q, 100 * (q + 1))
    theta = adapter.parametrization.value
    bounds = block_bounds(theta.size, opt._config.max_block_size)
    rng = np.random.default_rng(0)
    print(f"\n| block | parameters | batched forward of {q + 1} settings | {q + 1} single-setting forwards | ratio |")
    print("|---|---|---|---|---|")
    batched_times = []
    for block, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
        values = [theta.copy() for _ in range(q + 1)]
        for value in values[1:]:
            value[start:stop] += 1e-3 * rng.standard_normal(stop - start)
        adapter.loss_batch(values, key=0)  # warm-up
        batched = statistics.median(seconds(lambda: adapter.loss_batch(values, key=0), 5 * repeats))
        looped = statistics.median(seconds(lambda: [adapter.loss_batch([x], key=0) for x in values], repeats))
        batched_times.append(batched)
        print(f"| {block} | {start}-{stop} | {batched * 1e3:.2f} ms | {looped * 1e3:.2f} ms | {looped / batched:.1f}x |")
    forward = statistics.mean(batched_times)  # blocks are drawn uniformly at random

    def ask_tell(_, fresh):
        for _ in range(50):
            asked = [fresh.ask() for _ in range(q + 1)]
            for candidate in asked:
                fresh.tell(candidate, 1.0)

    overhead = statistics.median(seconds(ask_tell, repeats, setup=lambda: make("isotropic", q, 50 * (q + 1)))) / 50
    print(f"\nvectorized iteration {vectorized * 1e3:.1f} ms = batched forward {forward * 1e3:.1f} ms (mean over blocks) "
          f"+ ask/tell {overhead * 1e3:.1f} ms ({overhead / (q + 1) * 1e3:.2f} ms per candidate) + rest")
    print(f"ceiling of the speed-up with zero ask/tell cost: {sequential / forward:.1f}x "
          f"(one at a time {sequential * 1e3:.1f} ms / batched forward {forward * 1e3:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--q", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=60, help="ZO iterations per timed run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=8, help="seeds of the ZONP-vs-ZOI comparison")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    q, iterations = args.q, args.iterations
    budget = iterations * (q + 1)
    print(f"torch {torch.__version__}, {args.threads} thread(s), digits CNN, Q = {q}, batch 100, {iterations} iterations/run")

    def fresh():  # built outside the timed region
        return make("isotropic", q, budget)

    vec, seq, per = [], [], []
    for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits all
        vec += seconds(lambda adapter, opt: nevergrad_zonp.minimize_vectorized(opt, adapter), 1, setup=fresh)
        per += seconds(lambda adapter, opt: nevergrad_zonp.minimize_vectorized(opt, adapter, fast_path=False), 1, setup=fresh)
        seq += seconds(lambda adapter, opt: opt.minimize(adapter), 1, setup=fresh)
    v, p, s = (statistics.median(times) / iterations for times in (vec, per, seq))
    print("\n| path | s / iteration (median) | range | speed-up |")
    print("|---|---|---|---|")
    print(f"| one candidate at a time (minimize) | {s:.4f} | {min(seq) / iterations:.4f}-{max(seq) / iterations:.4f} | 1.0x |")
    print(f"| vectorized, a Nevergrad candidate per query (fast_path=False) | {p:.4f} | {min(per) / iterations:.4f}-{max(per) / iterations:.4f} | {s / p:.1f}x |")
    print(f"| vectorized, iteration-level fast path (default) | {v:.4f} | {min(vec) / iterations:.4f}-{max(vec) / iterations:.4f} | {s / v:.1f}x |")

    decompose(q, args.repeats, s, p)  # the per-candidate vectorized iteration: forward + ask/tell + rest

    # ZONP vs ZOI, seconds per query with T_ud = 100 over several Fisher refreshes.  A
    # query's cost depends on the block it perturbs (block 0 runs every layer per setting)
    # and a run has only 4 refreshes, each on one random block, so one seed says little:
    # each seed runs both methods back to back (the same seed draws the same ZO blocks for
    # both), and the ratio is pooled over seeds.
    long_budget = 4 * 100 * (q + 1) + 4 * 500
    totals = {"isotropic": [0.0, 0, 0], "natural": [0.0, 0, 0]}  # seconds, queries, Jacobian queries
    paired = []
    for seed in range(args.seeds):
        per_query = {}
        for sampler in ["isotropic", "natural"]:
            adapter, opt = make(sampler, q, long_budget, seed=seed)
            start = time.perf_counter()
            nevergrad_zonp.minimize_vectorized(opt, adapter)
            elapsed = time.perf_counter() - start
            totals[sampler][0] += elapsed
            totals[sampler][1] += adapter.queries
            totals[sampler][2] += opt.num_fisher_queries
            per_query[sampler] = elapsed / adapter.queries
        paired.append(per_query["natural"] / per_query["isotropic"])
    zoi = totals["isotropic"][0] / totals["isotropic"][1]
    print(f"\n{args.seeds} seeds, {long_budget} queries each, T_ud = 100")
    print("| method | s / query (pooled) | queries | of which Jacobian | ratio to ZOI (pooled) |")
    print("|---|---|---|---|---|")
    for name, key in [("ZOI", "isotropic"), ("ZONP", "natural")]:
        elapsed, queries, jac = totals[key]
        print(f"| {name} | {elapsed / queries * 1e3:.3f} ms | {queries} | {jac} | {elapsed / queries / zoi:.3f}x |")
    print(f"per-seed ratio ZONP/ZOI: median {statistics.median(paired):.3f}x, range {min(paired):.3f}-{max(paired):.3f}x")

if __name__ == "__main__":
    main()
