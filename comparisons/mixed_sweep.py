"""A hyper-parameter sweep with a deterministic choice, as Nevergrad users write them.

``python -m comparisons.mixed_sweep [--seeds 10] [--budget 400] [--methods ZONP ZOI ...] [--no-choice]``

Loss ``(x - 1.3)^2 + (log10 lr + 2)^2 + penalty[act]`` over ``x = Scalar(-5, 5)``,
``lr = Log(1e-4, 1)`` and ``act = Choice(["relu", "tanh", "gelu"], deterministic=True)``
(penalties 0.5, 0 and 0.2; the minimum 0 at x = 1.3, lr = 0.01, tanh).  Every method starts
from the parametrization's initial value (x = 0, lr = 0.01, relu: loss 2.19) with its
registry defaults; the table gives, per method, the median and the largest final loss of
its recommendation over the seeds, and on how many seeds it ended worse than the start.
"""

from __future__ import annotations

import argparse
import time
import typing as tp
import warnings

import nevergrad as ng
import numpy as np

import nevergrad_zonp  # noqa: F401  (registers the package's optimizers)

PENALTY = {"relu": 0.5, "tanh": 0.0, "gelu": 0.2}
METHODS = ("ZONP", "ZONPPaper", "ZOI", "ZOco", "SNES", "XNES", "CMA", "NGOpt")


def sweep_loss(x: float, lr: float, act: str = "tanh") -> float:
    """The sweep's loss (``act`` defaults to the best choice when the sweep has no choice)."""
    return float((x - 1.3) ** 2 + (np.log10(lr) + 2) ** 2 + PENALTY[act])


def parametrization(seed: int, choice: bool = True) -> ng.p.Instrumentation:
    """The sweep's parametrization, seeded."""
    kwargs: dict[str, tp.Any] = {"x": ng.p.Scalar(lower=-5, upper=5), "lr": ng.p.Log(lower=1e-4, upper=1.0)}
    if choice:
        kwargs["act"] = ng.p.Choice(list(PENALTY), deterministic=True)
    instrumentation = ng.p.Instrumentation(**kwargs)
    instrumentation.random_state = np.random.RandomState(seed)
    return instrumentation


def run(method: str, seeds: int, budget: int, choice: bool) -> tuple[float, np.ndarray]:
    """The start's loss and the final loss of ``method``'s recommendation on each seed."""
    finals = []
    start = sweep_loss(**parametrization(0, choice).value[1])  # the initial value does not depend on the seed
    for seed in range(seeds):
        instrumentation = parametrization(seed, choice)
        optimizer = ng.optimizers.registry[method](parametrization=instrumentation, budget=budget)
        recommendation = optimizer.minimize(lambda **kwargs: sweep_loss(**kwargs))
        finals.append(sweep_loss(**recommendation.kwargs))
    return start, np.asarray(finals)


def main(argv: tp.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m comparisons.mixed_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--no-choice", action="store_true", help="leave the Choice out (a continuous sweep)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # ZONP's no-oracle warning, Nevergrad's budget notes
    print(f"{args.seeds} seeds, budget {args.budget}{', without the choice' if args.no_choice else ''}:\n")
    print("| method | start | median final loss | largest | seeds worse than the start | seconds |")
    print("|---|---|---|---|---|---|")
    for method in args.methods:
        started = time.perf_counter()
        start, finals = run(method, args.seeds, args.budget, not args.no_choice)
        print(f"| {method} | {start:.3g} | {np.median(finals):.2g} | {finals.max():.2g} | "
              f"{int((finals > start).sum())} of {len(finals)} | {time.perf_counter() - started:.1f} |")


if __name__ == "__main__":
    main()
