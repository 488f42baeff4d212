"""Running a suite: :func:`run_suite` ties tuning, execution, storage and executors together.

The protocol, for every task and method of the suite: the tuning runs of the step-size
grid on the tuning seeds (:mod:`comparisons.tuning`: score, choice, grid extensions up to
``suite.max_extensions`` times, a choice still at an edge marked ``at_edge``), written to
``tuning.json`` (grids, per-seed losses, scores, choices, marks, failed runs); a method with
a fixed step size (``suite.fixed_step``) is not tuned, nor is a method without a step size
(NGOpt: its ``tuning.json`` entry says so, ``"tuned": false`` with a note, instead of a
grid).  Then the reported runs with the chosen step size (none for NGOpt) on the reported
seeds, and the tables ``results.csv`` (one row per run, tuning runs with
``phase = "tuning"``) and ``curves.csv`` (the curves, long format).

Resume: each run is stored in ``runs/<key>.json`` (key: task, method, seed, step size,
budget) as it finishes; a call skips the runs stored with the same settings, so an
interrupted suite re-run only does what is missing (:mod:`comparisons.storage`).  The
backprop-pretrained model of a (task, seed) is stored in ``pretrained/`` and reused by that
seed's other runs (local executors only; pretraining is deterministic, so results are the
same): delete the folder after changing a task's code.

Failures and interrupts: see :mod:`comparisons.dispatch`.  A failed tuning run counts as an
infinite loss, as a non-finite loss does (``tuning.json`` lists it under ``"failed"``);
failed runs have no row in the tables.  The command line exits at once with status 130 on
an interrupt, without waiting for a run still in the one-thread executor (pretraining and
data loading have no iteration at which to stop).

Parallelism:

- ``workers=1`` (default): a one-thread ``concurrent.futures.ThreadPoolExecutor`` (runs in
  this process: what a test or a notebook patches applies to them);
- ``workers=N``: a ``concurrent.futures.ProcessPoolExecutor`` of N spawned processes;
- ``executor=``: any ``concurrent.futures.Executor`` you pass (on an interrupt its queued
  runs are cancelled; its running ones are left to it);
- ``client=``: a ``distributed.Client`` (Dask); from the command line
  ``--dask-scheduler ADDRESS``.  The package must be installed in every worker's
  environment (``pip install .`` installs ``comparisons`` beside ``nevergrad_zonp``), and
  the workers must be able to read the suite's data paths; workers that cannot import the
  harness are named before any run is sent.  On an interrupt its pending runs are cancelled.

A suite may be run in parts into one folder (``--tasks``, ``--methods``), one after the
other or at the same time: the shared files keep the entries of the tasks and methods a
part did not cover (:func:`comparisons.storage.merged_table` and its siblings, under the
folder's lock).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import typing as tp
from pathlib import Path

import pandas as pd

from .dispatch import FailedRuns, Progress, Runs, SuiteInterrupted, check_dask_workers, local_executor, stopping_runs
from .execution import RunSpec
from .methods import METHODS
from .storage import (
    CURVES_FILE,
    RESULTS_FILE,
    SETTINGS_FILE,
    TUNING_FILE,
    merge_lock,
    merged_settings,
    merged_table,
    merged_tuning,
    write_atomic,
)
from .suites import Suite
from .tuning import TUNING_RULE, choose_step, extend_grid, step_grid, step_score, untuned_entry

__all__ = ["FailedRuns", "SuiteInterrupted", "run_suite"]


def run_suite(
    suite: Suite,
    out: str | os.PathLike[str],
    *,
    workers: int = 1,
    executor: concurrent.futures.Executor | None = None,
    client: tp.Any = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Tunes and runs ``suite``, writing everything under ``out``; returns the results table.

    Writes ``settings.json`` (the suite), ``runs/<key>.json`` (one per run, as it finishes),
    ``tuning.json`` (grids, tuning losses, chosen step sizes, rule), ``results.csv`` (one
    row per run, tuning runs with ``phase = "tuning"``) and ``curves.csv`` (the curves,
    long format).  ``progress(spec, skipped)`` is called once per run.  See the module
    docstring for ``workers``, ``executor`` and ``client``.

    Raises :class:`FailedRuns` at the end, after writing everything else, when runs raised;
    :class:`SuiteInterrupted` (a ``KeyboardInterrupt``) on SIGINT or SIGTERM, within seconds,
    with every finished run stored.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with merge_lock(folder):
        settings = merged_settings(folder / SETTINGS_FILE, suite.settings())
        write_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=1))
    unknown = [name for name in suite.methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    stepless = sorted({name for task in suite.tasks for name in suite.methods_for(task)
                       if not METHODS[name].tuned and suite.fixed_step(task, name) is not None})
    if stepless:
        raise ValueError(f"fixed_steps gives a step size to {stepless}, which have none")
    if client is not None:
        check_dask_workers(client)
    owned = local_executor(workers) if client is None and executor is None else None
    runs = Runs(folder, executor if owned is None else owned, client, progress)
    with stopping_runs(runs, owned):
        results = _tune_and_run(suite, folder, runs)
    if owned is not None:
        owned.shutdown()  # (every run is done)
    if runs.failed:
        raise FailedRuns(runs.failed, results)
    return results


def _tune_and_run(suite: Suite, folder: Path, runs: Runs) -> pd.DataFrame:
    """The protocol of :func:`run_suite`: tuning runs, grid extensions, ``tuning.json``, reported runs, tables.

    A failed tuning run counts as an infinite loss (as a non-finite loss does) and is listed
    under ``"failed"`` in its ``tuning.json`` entry; failed runs have no row in the tables.
    A method without a step size makes no tuning run: its entry is
    :func:`~comparisons.tuning.untuned_entry` and its reported runs have ``step_size=None``.
    """
    grids = {
        (task.name, name): step_grid(*suite.step_ranges[METHODS[name].step_name], suite.grid_size)
        for task in suite.tasks
        for name in suite.methods_for(task)
        if METHODS[name].tuned and suite.fixed_step(task, name) is None
    }
    tasks = {task.name: task for task in suite.tasks}

    def tuning_spec(task_name: str, name: str, seed: int, step: float) -> RunSpec:
        task = tasks[task_name]
        return RunSpec(task, name, seed, step, task.budget or suite.budget, suite.checkpoints, "tuning")

    tuning_specs = [
        tuning_spec(task_name, name, seed, step)
        for (task_name, name), grid in grids.items()
        for step in grid
        for seed in suite.tuning_seeds
    ]
    records = runs.run(tuning_specs, keep_going=True)
    extensions = {key: 0 for key in grids}

    def keys_of(key: tuple[str, str], step: float) -> list[str]:
        return [tuning_spec(*key, seed, step).key for seed in suite.tuning_seeds]

    def losses_of(key: tuple[str, str], step: float) -> list[float | None]:
        """Final training losses of a grid point over the tuning seeds (``None``: the run failed)."""
        return [records[run]["row"]["loss"] if run in records else None for run in keys_of(key, step)]

    def scores_of(key: tuple[str, str]) -> list[float]:
        return [step_score(losses_of(key, step)) for step in grids[key]]

    for _ in range(suite.max_extensions):
        new_specs = []
        for key, grid in grids.items():
            point = extend_grid(grid, choose_step(grid, scores_of(key)))
            if point is not None and point > 0 and point not in grid:
                grids[key] = sorted(grid + [point])
                extensions[key] += 1
                new_specs += [tuning_spec(*key, seed, point) for seed in suite.tuning_seeds]
        if not new_specs:
            break
        tuning_specs += new_specs
        records.update(runs.run(new_specs, keep_going=True))
    tuning: dict[str, dict[str, tp.Any]] = {task.name: {} for task in suite.tasks}
    chosen: dict[tuple[str, str], float | None] = {}
    for key, grid in grids.items():
        scores = scores_of(key)
        chosen[key] = choose_step(grid, scores)
        tuning[key[0]][key[1]] = {
            "step_name": METHODS[key[1]].step_name,
            "grid": grid,
            "losses": [losses_of(key, step) for step in grid],
            "scores": scores,
            "chosen": chosen[key],
            "at_edge": extend_grid(grid, chosen[key]) is not None,
            "extensions": extensions[key],
            "seeds": list(suite.tuning_seeds),
            "rule": TUNING_RULE,
        }
        failed = [run for step in grid for run in keys_of(key, step) if run in runs.failed]
        if failed:
            tuning[key[0]][key[1]]["failed"] = failed
    for task in suite.tasks:
        for name in suite.methods_for(task):
            fixed = suite.fixed_step(task, name)
            if not METHODS[name].tuned:
                chosen[task.name, name] = None
                tuning[task.name][name] = untuned_entry(METHODS[name])
            elif fixed is not None:
                chosen[task.name, name] = fixed
                tuning[task.name][name] = {"step_name": METHODS[name].step_name, "chosen": fixed, "rule": suite.steps_rule}
    with merge_lock(folder):
        write_atomic(folder / TUNING_FILE, json.dumps(merged_tuning(folder / TUNING_FILE, tuning), indent=1))
    final_specs = [
        RunSpec(task, name, seed, chosen[task.name, name], task.budget or suite.budget, suite.checkpoints, "final")
        for task in suite.tasks
        for name in suite.methods_for(task)
        for seed in suite.seeds
    ]
    records.update(runs.run(final_specs, keep_going=True))
    covered = {(task.name, name) for task in suite.tasks for name in suite.methods_for(task)}
    runs.forget_failures(covered, {spec.key for spec in tuning_specs + final_specs})
    ordered = [records[spec.key] for spec in tuning_specs + final_specs if spec.key in records]
    results = pd.DataFrame([record["row"] for record in ordered])
    curves = pd.DataFrame(
        [
            {"task": record["row"]["task"], "optimizer_name": record["row"]["optimizer_name"], "seed": record["row"]["seed"],
             "phase": record["row"]["phase"], "step_size": record["row"]["step_size"], **point}
            for record in ordered
            for point in record["curve"]
        ]
    )
    with merge_lock(folder):
        for name, table in ((RESULTS_FILE, results), (CURVES_FILE, curves)):
            merged = merged_table(folder / name, table, covered)
            if len(merged.columns):  # (else no run finished and none is stored: no table to write)
                write_atomic(folder / name, merged.to_csv(index=False))
    return results
