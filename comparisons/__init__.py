"""Comparison harness: methods x tasks x seeds at equal query budgets, tuned fairly, reported.

- :mod:`comparisons.suites`: suites as data (:class:`~comparisons.suites.Suite`,
  :class:`~comparisons.suites.TaskSpec`) and the built-in ``quick`` and ``paper`` suites;
- :mod:`comparisons.methods`: the method table (name -> configured optimizer);
- :mod:`comparisons.runner`: one run, step-size tuning, resumable result files,
  ``concurrent.futures`` and Dask execution;
- :mod:`comparisons.report`: markdown tables with Mann-Whitney U tests and PNG curves.

Command line: ``python -m comparisons run --suite quick --out results/quick`` runs (and
resumes) a suite and writes its report; ``python -m comparisons report results/quick``
rewrites the report from the stored results.  The ``bench_*.py`` scripts in this folder
are stand-alone micro-benchmarks.
"""

from .methods import METHODS, Method
from .report import write_report
from .runner import RunSpec, execute_run, run_suite
from .suites import SUITES, Suite, TaskSpec, paper_suite, quick_suite

__all__ = [
    "METHODS",
    "Method",
    "RunSpec",
    "SUITES",
    "Suite",
    "TaskSpec",
    "execute_run",
    "paper_suite",
    "quick_suite",
    "run_suite",
    "write_report",
]
