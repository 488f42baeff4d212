"""Peak memory of ZONP against ZOI on the CIFAR-10 MLP-Mixers (issue 4's benchmark).

Each (model, method) pair runs in a fresh process and reports its peak resident set size
(``ru_maxrss``), so the numbers include torch, the model, the data and the optimizer.
ZONP's dominant cost is the store of per-block Cholesky factors (``B`` blocks of
``n_b x n_b`` float32).  In a real run it fills lazily, one block per Fisher refresh, and a
short run never fills it; by default every block's factor is set first from a full-rank
Fisher, so the peak is the worst case of a long run (``--no-fill``: not).  Then, on
synthetic CIFAR-shaped data (batch 100, Q = 100 by default), the largest iteration any ZO
method makes (the first block perturbed, so every later layer runs batched), a few ZO
iterations on the fast path, and for ZONP the largest Fisher refresh (the first block's)
run for real.  ``--ranks`` adds compact-Fisher rows (``fisher_rank``), ``--half`` a
float16 factor row.  ``--breakdown`` reports memory by component in one process.

Run: ``python comparisons/bench_memory.py [--sizes small large] [--ranks 64 16] [--half]``.
The paper measured 7.36 GB (ZO-NP) vs 3.95 GB (ZO-I) at 33,642 parameters and 40.9 GB
vs 15.7 GB at 1.7M, on a GPU with its own framework overheads: compare ratios, not bytes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings


def measure(
    size: str, sampler: str, fill: bool, q: int, iterations: int, rank: int | None = None, storage: str = "float32",
    refresh_block: int = 0,
) -> dict:
    import numpy as np
    import torch

    import nevergrad_zonp
    from nevergrad_zonp.tasks.cifar import mixer_task, synthetic_cifar10

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    train, test = synthetic_cifar10(n_train=200, n_test=10, seed=0)
    task = mixer_task(train, test, size=size, seed=0)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="model", batch_size=100)
    opt = nevergrad_zonp.ZerothOrder(
        sampler=sampler, num_directions=q, lr=1e-3, fisher_period=max(1, iterations), fisher_rank=rank, fisher_storage=storage
    )(parametrization=adapter.parametrization, budget=10**9)
    opt.attach(adapter)
    bounds = opt.block_bounds
    if fill and sampler == "natural":
        for block in range(len(bounds) - 1):
            n = int(bounds[block + 1] - bounds[block])
            opt.sampler.update(block, np.eye(n) + np.full((n, n), 1.0 / n))
    start = time.perf_counter()
    # The largest iteration of any ZO method: the first block perturbed, every later layer batched.
    first = int(bounds[1])
    adapter.block_losses(adapter.theta0, 0, 1e-3 * np.random.default_rng(0).standard_normal((q + 1, first)), 0)
    for _ in range(iterations):  # iteration 0 refreshes a Fisher (ZONP)
        request = opt.ask_iteration()
        opt.tell_iteration(request, adapter.block_losses(request.theta, request.start, request.deltas, request.key))
    if sampler == "natural":  # and a refresh: by default the largest, the first block's
        block = refresh_block % (len(bounds) - 1)
        opt.refresh_fisher(block, 1)
    return {
        "size": size,
        "method": "ZONP" if sampler == "natural" else "ZOI",
        "rank": rank,
        "storage": storage,
        "parameters": adapter.dimension,
        "blocks": len(bounds) - 1,
        "stored_factors": len(getattr(opt.sampler, "factors", {})),
        "stored_gib": sum(a.nbytes for a in getattr(opt.sampler, "factors", {}).values()) / 2**30,
        "queries": adapter.queries,
        "seconds": time.perf_counter() - start,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def breakdown(size: str, q: int, rank: int | None, settings_per_call: int) -> dict:
    """Memory by component of ZONP against ZOI, in one process (GiB).

    ``peak`` is ``ru_maxrss`` (it only grows), ``resident`` the current RSS.  Steps: torch +
    model + data; one ZOI iteration of ``Q + 1`` settings (ZOI's whole working set); one
    Fisher refresh of the first block (its ``n_b + 1`` settings batched over every layer
    after it: the largest activations; Jacobian and Fisher in float64), without keeping
    its factor; then every block's factor stored (a long run's worst case: resident growth).
    """
    import numpy as np
    import torch

    import nevergrad_zonp
    from nevergrad_zonp.tasks.cifar import mixer_task, synthetic_cifar10

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def resident() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize() / 2**30

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    steps = []
    train, test = synthetic_cifar10(n_train=200, n_test=10, seed=0)
    task = mixer_task(train, test, size=size, seed=0)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="model", batch_size=100)
    adapter.settings_per_call = settings_per_call
    steps.append(("torch, model, data, adapter", peak(), resident()))
    zoi = nevergrad_zonp.ZerothOrder(sampler="isotropic", num_directions=q, lr=1e-3)(parametrization=adapter.parametrization, budget=10**9)
    first = int(zoi.block_bounds[1])
    # ZOI's largest iteration: the first block perturbed, so every layer after it runs batched.
    adapter.block_losses(adapter.theta0, 0, 1e-3 * np.random.default_rng(0).standard_normal((q + 1, first)), 1)
    steps.append((f"ZOI iteration on block 0, Q + 1 = {q + 1} settings", peak(), resident()))
    zonp = nevergrad_zonp.ZerothOrder(sampler="natural", num_directions=q, lr=1e-3, fisher_rank=rank)(
        parametrization=adapter.parametrization, budget=10**9
    )
    zonp.attach(adapter)
    bounds = zonp.block_bounds
    zonp.refresh_fisher(0, 1)
    zonp.sampler.factors.clear()
    steps.append((f"Fisher refresh of block 0 ({int(bounds[1] - bounds[0]) + 1} settings)", peak(), resident()))
    for block in range(len(bounds) - 1):
        n = int(bounds[block + 1] - bounds[block])
        zonp.sampler.update(block, np.eye(n) + np.full((n, n), 1.0 / n))
    steps.append((f"all {len(bounds) - 1} blocks' Fisher stored", peak(), resident()))
    stored = sum(array.nbytes for array in zonp.sampler.factors.values()) / 2**30
    return {"size": size, "parameters": adapter.dimension, "q": q, "rank": rank, "settings_per_call": settings_per_call,
            "stored_gib": stored, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["small", "large"])
    parser.add_argument("--no-fill", action="store_true", help="measure a short real run only")
    parser.add_argument("--q", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--ranks", nargs="*", type=int, default=[64], help="fisher_rank values of the compact Fisher")
    parser.add_argument("--half", action="store_true", help="also the full Fisher with float16 factors")
    parser.add_argument(
        "--refresh-block", type=int, default=0,
        help="block of ZONP's measured refresh (0: the first, the largest transient; -1: the last, the cheapest)",
    )
    parser.add_argument("--storage", default="float32", help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", action="store_true", help="peak memory by component of ZONP, one process per size")
    parser.add_argument("--rank", type=int, help="fisher_rank (compact Fisher) for --breakdown")
    parser.add_argument("--settings-per-call", type=int, default=32, help="settings per vmapped forward (adapter)")
    args = parser.parse_args()
    if args.breakdown:
        print(json.dumps(breakdown(args.sizes[0], args.q, args.rank, args.settings_per_call)))
        return
    if args.child:
        rank = None if args.child[2] == "full" else int(args.child[2])
        print(json.dumps(measure(args.child[0], args.child[1], not args.no_fill, args.q, args.iterations, rank, args.storage,
                                 args.refresh_block)))
        return
    rows = []
    for size in args.sizes:
        variants = [("isotropic", "full", "float32"), ("natural", "full", "float32")]
        variants += [("natural", str(rank), "float32") for rank in args.ranks]
        if args.half:
            variants.append(("natural", "full", "float16"))
        for sampler, rank, storage in variants:
            command = [sys.executable, __file__, "--child", size, sampler, rank, "--q", str(args.q),
                       "--iterations", str(args.iterations), "--storage", storage, "--refresh-block", str(args.refresh_block)]
            if args.no_fill:
                command.append("--no-fill")
            rows.append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
    print("| model | N | blocks | method | Fisher form | stored (GiB) | peak RSS (GiB) | ZONP / ZOI |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        zoi = next(r for r in rows if r["size"] == row["size"] and r["method"] == "ZOI")
        form = "—" if row["method"] == "ZOI" else ("full" if row["rank"] is None else f"rank {row['rank']}") + f", {row['storage']}"
        print(
            f"| {row['size']} | {row['parameters']:,} | {row['blocks']} | {row['method']} | {form} | "
            f"{row['stored_gib']:.3f} | {row['peak_rss_gib']:.2f} | {row['peak_rss_gib'] / zoi['peak_rss_gib']:.2f}x |"
        )


if __name__ == "__main__":
    main()
