"""Command line of the comparison harness.

``python -m comparisons run --suite quick --out results/quick [--workers N]
[--dask-scheduler ADDRESS] [--fashion-mnist PATH] [--cifar10 PATH] [--tasks NAME ...]
[--methods NAME ...]`` runs a suite
(resuming from the run files already in ``--out``), then writes its report;
``python -m comparisons report FOLDER`` rewrites the report of stored results.
"""

from __future__ import annotations

import argparse
import time
import typing as tp

from tqdm import tqdm

from nevergrad_zonp.optimizers.zeroth_order import DIRECTION_STREAMS

from .report import write_report
from .runner import RunSpec, run_suite
from .suites import SUITES, paper_suite


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparisons", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a suite and write its report")
    run.add_argument("--suite", choices=sorted(SUITES), default="quick")
    run.add_argument("--out", required=True, help="folder of the results (created; existing runs are kept)")
    run.add_argument("--workers", type=int, default=1, help="parallel processes (concurrent.futures)")
    run.add_argument("--dask-scheduler", help="address of a Dask scheduler to run on instead of local processes")
    run.add_argument("--fashion-mnist", help="folder of the FashionMNIST idx files (paper suite)")
    run.add_argument("--cifar10", help="folder of CIFAR-10's python batches (paper suite)")
    run.add_argument("--tasks", nargs="+", metavar="TASK", help="run only these tasks of the suite (default: all)")
    run.add_argument("--methods", nargs="+", metavar="METHOD", help="run only these methods of the suite (default: all)")
    run.add_argument(
        "--direction-stream", choices=DIRECTION_STREAMS,
        help="draw every ZO method's Gaussian directions from this stream (default: the suite's); other runs: use another --out",
    )
    report = commands.add_parser("report", help="write the report of stored results")
    report.add_argument("folder")
    return parser


def main(argv: tp.Sequence[str] | None = None) -> None:
    """Entry point of ``python -m comparisons``."""
    args = _parser().parse_args(argv)
    if args.command == "report":
        print(f"report: {write_report(args.folder)}")
        return
    if args.suite == "paper":
        suite = paper_suite(fashion_mnist=args.fashion_mnist, cifar10=args.cifar10)
    else:
        suite = SUITES[args.suite]()
    if args.tasks or args.methods:
        suite = suite.restricted_to(args.tasks, args.methods)
    if args.direction_stream is not None:
        suite = suite.with_direction_stream(args.direction_stream)
    client = None
    if args.dask_scheduler:
        from distributed import Client

        client = Client(args.dask_scheduler)
    started = time.perf_counter()
    counts = {"runs": 0, "skipped": 0}
    try:
        with tqdm(total=suite.num_runs, desc=f"suite {suite.name}", unit="run") as bar:

            def progress(spec: RunSpec, skipped: bool) -> None:
                counts["runs"] += 1
                counts["skipped"] += skipped
                if bar.n >= bar.total:  # a grid extension: runs beyond the suite's planned count
                    bar.total += 1
                bar.set_postfix_str(f"{'skipped ' if skipped else ''}{spec.task.name} {spec.method} seed {spec.seed}")
                bar.update()

            run_suite(suite, args.out, workers=args.workers, client=client, progress=progress)
    finally:
        if client is not None:
            client.close()
    extensions = max(0, counts["runs"] - suite.num_runs)
    print(
        f"{counts['runs']} runs ({suite.num_runs} planned, {extensions} for grid extensions; {counts['skipped']} "
        f"already in {args.out}) in {time.perf_counter() - started:.0f} s"
    )
    print(f"report: {write_report(args.out)}")


if __name__ == "__main__":
    main()
