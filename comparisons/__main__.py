"""Command line of the comparison harness.

``python -m comparisons run --suite quick --out results/quick [--workers N]
[--dask-scheduler ADDRESS] [--mnist PATH] [--fashion-mnist PATH] [--cifar10 PATH] [--tasks NAME ...]
[--methods NAME ...]`` runs a suite
(resuming from the run files already in ``--out``), then writes its report;
``python -m comparisons report FOLDER`` rewrites the report of stored results.

Exit status of ``run``: 0 when every run is stored; 1 when runs failed (their keys and
where their tracebacks are are printed; the other runs are stored and reported, and the same
command retries the failed ones); 130 on Ctrl-C (SIGINT), 143 on SIGTERM, after one line
saying how many runs are kept and the command that resumes.  ``report`` exits with 1 and the reason when it
cannot read the results.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import typing as tp
import warnings

from tqdm import tqdm

from nevergrad_zonp.optimizers.zeroth_order import DIRECTION_STREAMS

from .dispatch import FailedRuns, SuiteInterrupted, first_interrupt_only
from .execution import RunSpec
from .report import ReportError, ReportWarning, write_report
from .runner import run_suite
from .suites import SUITES, Suite, frontier_suite, paper_suite

#: Exit status after a stopping signal is 128 + its number, as shells report a process ended by it:
#: 130 after Ctrl-C (SIGINT), 143 after SIGTERM.
SIGNAL_EXIT_BASE = 128
#: The data-folder options and the suites that read them.
DATA_OPTIONS = {"mnist": ("frontier",), "fashion_mnist": ("paper", "frontier"), "cifar10": ("paper",)}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m comparisons", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run (or resume) a suite and write its report")
    run.add_argument("--suite", choices=sorted(SUITES), default="quick")
    run.add_argument("--out", required=True, help="folder of the results (created; existing runs are kept)")
    run.add_argument("--workers", type=int, default=1, help="parallel processes (concurrent.futures)")
    run.add_argument("--dask-scheduler", help="address of a Dask scheduler to run on instead of local processes")
    run.add_argument("--mnist", help="folder of the MNIST idx files (frontier suite: its optical classifiers on MNIST)")
    run.add_argument(
        "--fashion-mnist", help="folder of the FashionMNIST idx files (paper suite; frontier suite: its optical classifiers)"
    )
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


def _report(folder: str) -> bool:
    """Writes the report of ``folder`` and prints its path and what it left out, or prints why it could not."""
    try:
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", ReportWarning)
            path = write_report(folder)
    except ReportError as error:
        print(f"report: not written: {error}", file=sys.stderr)
        return False
    for note in notes:
        if issubclass(note.category, ReportWarning):
            print(f"report: left out: {note.message}", file=sys.stderr)
        else:
            warnings.showwarning(note.message, note.category, note.filename, note.lineno)
    print(f"report: {path}")
    return True


def main(argv: tp.Sequence[str] | None = None) -> None:
    """Entry point of ``python -m comparisons``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "report":
        if not _report(args.folder):
            raise SystemExit(1)
        return
    for option, suites in DATA_OPTIONS.items():
        if getattr(args, option) is not None and args.suite not in suites:
            flag = "--" + option.replace("_", "-")
            raise SystemExit(f"error: {flag} is read by the {' and '.join(suites)} suite(s) only, not by {args.suite!r}")
    if args.suite == "paper":
        suite = paper_suite(fashion_mnist=args.fashion_mnist, cifar10=args.cifar10)
    elif args.suite == "frontier":
        suite = frontier_suite(mnist=args.mnist, fashion_mnist=args.fashion_mnist)
    else:
        suite = SUITES[args.suite]()
    if args.tasks or args.methods:
        suite = suite.restricted_to(args.tasks, args.methods)
    if args.direction_stream is not None:
        suite = suite.with_direction_stream(args.direction_stream)
    started = time.perf_counter()
    counts = {"runs": 0, "skipped": 0}
    failure = None
    with first_interrupt_only():  # after a first Ctrl-C or SIGTERM, further ones do not cut the shutdown short
        try:
            _run(suite, args, counts)
        except SuiteInterrupted as stop:
            print(
                f"interrupted: {stop.kept} runs kept in {stop.folder} ({stop.finished} finished in this session); "
                f"resume with: python -m comparisons {shlex.join(argv)}",
                file=sys.stderr, flush=True,
            )
            sys.stdout.flush()
            # At once: a run still computing in the one-thread executor would hold the interpreter's exit
            # until its next iteration (or the end of its pretraining); everything kept is on disk.
            os._exit(SIGNAL_EXIT_BASE + stop.signum)
        except FailedRuns as failed:
            failure = failed
    extensions = max(0, counts["runs"] - suite.num_runs)
    print(
        f"{counts['runs']} runs ({suite.num_runs} planned, {extensions} for grid extensions; {counts['skipped']} "
        f"already in {args.out}) in {time.perf_counter() - started:.0f} s"
    )
    reported = _report(args.out)
    if failure is not None:
        raise SystemExit(f"error: {failure}")
    if not reported:
        raise SystemExit(1)


def _run(suite: Suite, args: argparse.Namespace, counts: dict[str, int]) -> None:
    """Runs ``suite`` as the command line asks, with a progress bar, counting runs (and reused ones) in ``counts``."""
    client = None
    if args.dask_scheduler:
        from distributed import Client

        client = Client(args.dask_scheduler)
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


if __name__ == "__main__":
    main()
