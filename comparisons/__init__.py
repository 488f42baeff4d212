"""Comparison harness: methods x tasks x seeds at equal query budgets, tuned fairly, reported.

- :mod:`comparisons.suites`: suites as data (:class:`~comparisons.suites.Suite`,
  :class:`~comparisons.suites.TaskSpec`) and the built-in ``quick`` and ``paper`` suites;
- :mod:`comparisons.methods`: the method table (name -> configured optimizer);
- :mod:`comparisons.execution`: one run (:class:`~comparisons.execution.RunSpec`,
  :func:`~comparisons.execution.execute_run`);
- :mod:`comparisons.storage`: a results folder: run files, resume, atomic writes, merges;
- :mod:`comparisons.tuning`: the step-size grid and the rules that choose from it;
- :mod:`comparisons.dispatch`: executors, storing runs as they finish, failures, interrupts;
- :mod:`comparisons.runner`: :func:`~comparisons.runner.run_suite`, the protocol that ties
  them together;
- :mod:`comparisons.report`: markdown tables with Mann-Whitney U tests and PNG curves.

Command line: ``python -m comparisons run --suite quick --out results/quick`` runs (and
resumes) a suite and writes its report; ``python -m comparisons report results/quick``
rewrites the report from the stored results.  The ``bench_*.py`` scripts in this folder
are stand-alone micro-benchmarks.
"""

from .execution import RunSpec, execute_run
from .methods import METHODS, Method
from .report import write_report
from .runner import run_suite
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
