"""Seconds per query of the photonic chip models: Q + 1 settings in one vmapped call vs one at a time.

A zeroth-order iteration evaluates Q + 1 parameter settings on one mini-batch (docs/method.md, "The
zeroth-order estimate").  The model adapter does it with one ``torch.func.functional_call`` under
``torch.vmap`` over a leading variation dimension; this script times that against the
same settings evaluated in a Python loop, on the chips of the equalization and copying
tasks, and prints seconds per query (per parameter setting) and the speed-up.

    python comparisons/bench_photonic_forward.py [--queries 32] [--batch 100] [--delay 50]
"""

from __future__ import annotations

import argparse
import statistics
import time
import typing as tp

import torch
from torch.func import functional_call

from nevergrad_zonp.tasks.base import Task
from nevergrad_zonp.tasks.copying import copying_task
from nevergrad_zonp.tasks.equalization import equalization_task


def settings(model: torch.nn.Module, count: int, seed: int) -> dict[str, torch.Tensor]:
    """``count`` random perturbations of the model's parameters, stacked on a leading axis."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: p.detach() + 1e-3 * torch.randn(count, *p.shape, generator=generator)
        for name, p in model.named_parameters()
    }


def median_seconds(fn: tp.Callable[[], torch.Tensor], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(task: Task, queries: int, batch: int, repeats: int) -> dict[str, float]:
    model = task.chip
    params = settings(model, queries + 1, seed=0)
    inputs = task.train[0][:batch]
    batched_call = torch.vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, None))

    def batched() -> torch.Tensor:
        return batched_call(params, inputs)

    def looped() -> torch.Tensor:
        return torch.stack(
            [functional_call(model, {k: v[i] for k, v in params.items()}, (inputs,)) for i in range(queries + 1)]
        )

    with torch.no_grad():
        if not torch.allclose(batched(), looped(), atol=1e-4):
            raise RuntimeError(f"{task.name}: batched and looped outputs differ")
        batched_s = median_seconds(batched, repeats) / (queries + 1)
        looped_s = median_seconds(looped, repeats) / (queries + 1)
    return {"batched": batched_s, "looped": looped_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=32, help="Q: perturbations per iteration (Q + 1 settings)")
    parser.add_argument("--batch", type=int, default=100, help="mini-batch size")
    parser.add_argument("--delay", type=int, default=50, help="copying delay T")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tasks = [
        equalization_task(n_train=args.batch, n_test=1),
        copying_task(delay=args.delay, n_train=args.batch, n_test=1),
    ]
    print(
        f"CPU, {args.threads} thread(s), Q = {args.queries} ({args.queries + 1} settings per call), "
        f"batch {args.batch}"
    )
    print(f"{'task':<14}{'params':>8}{'batched s/query':>18}{'looped s/query':>17}{'speed-up':>10}")
    for task in tasks:
        result = bench(task, args.queries, args.batch, args.repeats)
        n_params = sum(p.numel() for p in task.model.parameters())
        print(
            f"{task.name:<14}{n_params:>8}{result['batched']:>18.2e}{result['looped']:>17.2e}"
            f"{result['looped'] / result['batched']:>9.1f}x"
        )


if __name__ == "__main__":
    main()
