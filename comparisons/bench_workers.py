"""Wall time of ``--workers N`` runs with the harness's thread rule, or with torch's default threads.

Starts a pool of ``--workers`` spawned processes and runs one short copying-chip run in
each at once (LPP, ``--budget`` queries, from the ``frontier`` suite's stored pretrained
chip), then prints the pool's wall time.  ``--threads shared`` is the harness's pool
(:func:`comparisons.dispatch.process_pool`: cores // N torch threads a worker);
``--threads default`` leaves each worker torch's default, one thread per core.

    python comparisons/bench_workers.py --threads shared
    python comparisons/bench_workers.py --threads default
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import time
from pathlib import Path

from comparisons import dispatch
from comparisons.execution import RunSpec, execute_run
from comparisons.suites import SUITES


def _warm(_: int) -> int:
    """Imports what a run needs, so that the clock starts on warm workers."""
    import nevergrad_zonp  # noqa: F401

    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", choices=["shared", "default"], default="shared")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--method", default="LPP")
    parser.add_argument("--pretrained", type=Path, default=Path("comparisons/reported/frontier/pretrained"))
    args = parser.parse_args()
    suite = SUITES["frontier"]()
    task = next(task for task in suite.tasks if task.name == "copying")
    specs = [
        RunSpec(task, args.method, 1000 + index, 0.003, args.budget, suite.checkpoints, "tuning", pretrained_cache=str(args.pretrained))
        for index in range(args.workers)
    ]
    if args.threads == "shared":
        pool = dispatch.process_pool(args.workers)
    else:
        pool = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        list(pool.map(_warm, range(args.workers)))  # the workers started, torch imported, before the clock
        began = time.perf_counter()
        records = list(pool.map(execute_run, specs))
        wall = time.perf_counter() - began
    runs = ", ".join(f"{record['row']['elapsed_time']:.1f} s" for record in records)
    print(f"{args.workers} workers, threads {args.threads}: {wall:.1f} s wall for {len(records)} runs at once ({runs})")


if __name__ == "__main__":
    main()
