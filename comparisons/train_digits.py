"""Train the digits CNN with ZONP through the model adapter, printing progress.

A short, self-contained example of the package's main use: a PyTorch model treated as a
black box, trained from queries only.  Data: scikit-learn's embedded digits, upsampled to
28x28 (no download).  Run: ``python comparisons/train_digits.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import time

import torch

import nevergrad_zonp
from nevergrad_zonp.tasks.images import digits_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizer", default="ZONP", choices=["ZONP", "ZOI", "ZOco"])
    parser.add_argument("--budget", type=int, default=20_000, help="queries, Fisher Jacobian queries included")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--q", type=int, default=16, help="directions per iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report-every", type=int, default=2_000, help="queries between progress lines")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    task = digits_task(seed=args.seed)
    adapter = nevergrad_zonp.ModelAdapter.from_task(task, on="model", batch_size=100, seed=args.seed)
    sampler = {"ZONP": "natural", "ZOI": "isotropic", "ZOco": "coordinate"}[args.optimizer]
    optimizer = nevergrad_zonp.ZerothOrder(sampler=sampler, num_directions=args.q, lr=args.lr)(
        parametrization=adapter.parametrization, budget=args.budget
    )
    optimizer.parametrization.random_state.seed(args.seed)
    start = time.perf_counter()
    initial = adapter.evaluate(data=task.test)
    print(f"{args.optimizer} on digits CNN: {adapter.dimension} parameters, budget {args.budget} queries, lr {args.lr}, Q {args.q}")
    print(f"queries {0:>7}  test loss {initial['loss']:.3f}  test accuracy {initial['accuracy']:.3f}")
    next_report = args.report_every

    def progress(opt, candidates, losses):
        nonlocal next_report
        if adapter.queries >= next_report:
            next_report += args.report_every
            metrics = adapter.evaluate(opt.recommend(), data=task.test)
            print(
                f"queries {adapter.queries:>7}  test loss {metrics['loss']:.3f}  test accuracy {metrics['accuracy']:.3f}"
                f"  ({time.perf_counter() - start:.0f} s)"
            )

    recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter, callback=progress)
    final = adapter.evaluate(recommendation, data=task.test)
    print(
        f"final: test accuracy {final['accuracy']:.3f} after {adapter.queries} queries "
        f"({adapter.sample_forwards} sample forwards, {getattr(optimizer, 'num_fisher_queries', 0)} for the Fisher), "
        f"{time.perf_counter() - start:.0f} s"
    )
    adapter.load(recommendation)


if __name__ == "__main__":
    main()
