"""Running a suite: one run, step-size tuning, resumable result files, executors.

One run (:func:`execute_run`) builds the task from its seed, applies the suite's protocol
(optional backprop pretraining on the ideal model, parameters copied onto the chip), then
trains by ZO through :func:`nevergrad_zonp.minimize_vectorized` on the chip (or the model
when the task has no chip) until the query budget is spent.  It records:

- a curve of ``checkpoints + 1`` points (start, ``budget * i / checkpoints`` queries for
  ``i < checkpoints``, end): queries, sample forwards, wall time, the **training loss of
  the recommendation evaluated on the full training split** and the task metric on the
  test split.  These evaluations are measurements: they are not counted as queries and
  their time is excluded from ``elapsed_time``;
- one result row with Nevergrad's benchmark column names (``optimizer_name``, ``budget``,
  ``loss`` = final full-training-split loss, ``seed``, ``elapsed_time``,
  ``elapsed_budget`` = queries spent, ``dimension``, ``num_workers``) plus ours (``task``,
  ``phase``, ``queries``, ``fisher_queries``, ``sample_forwards``, ``step_name``,
  ``step_size``, ``test_loss``, ``test_<metric>``, ``train_<metric>``, ...);
- ``peak_memory_mb``: peak resident set size of the process during the training loop
  minus its value at the start of the loop (all allocations, torch included), sampled
  every 5 ms from ``/proc/self/statm`` by a background thread (:class:`PeakMemory`).
  Where ``/proc`` is missing it falls back to the growth of
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a lower bound in a reused process.  Runs
  sharing a process (threads, an in-process Dask cluster) see each other's allocations.
  ``tracemalloc`` was not used: it slows the Python-heavy baselines (CMA-ES, SNES) two- to
  three-fold and would distort ``elapsed_time``.

Every run is seeded from its seed alone (the task's data and initialisation, torch's
global generator, the parametrization's ``random_state``, the adapter's mini-batch order)
and uses one thread, so two runs with the same seed give the same row apart from
``elapsed_time`` and ``peak_memory_mb``.

Tuning (:func:`run_suite`): for every task and method, one run per point of the method's
log-spaced step-size grid (same number of points for every method) on every tuning seed
(none of them a reported seed).  A step size's score is the **median over the tuning seeds
of the final training loss** (``loss``; a non-finite loss counts as infinite); the lowest
score wins, ties to the smaller step.  When the winner is the lowest or the highest grid
point, the grid is extended by one point beyond that edge (same log spacing) and the new
point is run on every tuning seed, up to ``suite.max_extensions`` times; a choice still
at an edge is marked (``at_edge``).  Grids, per-seed losses, scores, choices and marks are
written to ``tuning.json``.

Resume: each finished run is written atomically to ``runs/<key>.json`` (key: task,
method, seed, step size, budget); :func:`run_suite` skips runs whose file exists, so an
interrupted suite re-run only does what is missing.  The backprop-pretrained model of a
(task, seed) is stored in ``pretrained/`` and reused by that seed's other runs (local
executors only; pretraining is deterministic, so results are the same): delete the
folder after changing a task's code.

Parallelism: runs are submitted to an executor with ``submit(fn, *args)``:

- ``workers=1`` (default): a one-thread ``concurrent.futures.ThreadPoolExecutor``;
- ``workers=N``: a ``concurrent.futures.ProcessPoolExecutor`` of N spawned processes;
- ``executor=``: any ``concurrent.futures.Executor`` you pass;
- ``client=``: a ``distributed.Client`` (Dask); from the command line
  ``--dask-scheduler ADDRESS``.  The package must be installed in every worker's
  environment (``pip install .`` installs ``comparisons`` beside ``nevergrad_zonp``), and
  the workers must be able to read the suite's data paths; workers that cannot import the
  harness are named before any run is sent.

Result files are written by the submitting process, so workers need no shared disk.

A suite may be run in parts into one folder (the command line's ``--tasks`` and
``--methods``): ``tuning.json``, ``results.csv`` and ``curves.csv`` keep the entries of the
tasks and methods a run did not cover, and replace those it did.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import multiprocessing
import os
import pickle
import resource
import tempfile
import threading
import time
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from nevergrad.optimization import base
from threadpoolctl import threadpool_limits

from nevergrad_zonp import ModelAdapter, minimize_vectorized, reuse_freed_memory
from nevergrad_zonp.photonics import transfer_parameters
from nevergrad_zonp.tasks.base import pretrain

from .methods import METHODS
from .suites import Suite, TaskSpec

Record = dict[str, tp.Any]
Progress = tp.Callable[["RunSpec", bool], None]

RESULTS_FILE = "results.csv"
CURVES_FILE = "curves.csv"
TUNING_FILE = "tuning.json"
SETTINGS_FILE = "settings.json"
RUNS_DIR = "runs"
PRETRAINED_DIR = "pretrained"
TUNING_RULE = (
    "lowest median over the tuning seeds of the final training loss (full training split); ties to the smaller "
    "step; a grid whose best point is at an edge is extended beyond it"
)
#: Columns that measure the machine rather than the algorithm (excluded from determinism checks).
MACHINE_COLUMNS = ("elapsed_time", "peak_memory_mb")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a method with one step size on one task, from one seed, to one budget."""

    task: TaskSpec
    method: str
    seed: int
    step_size: float
    budget: int
    checkpoints: int
    phase: str
    #: Folder where the backprop-pretrained model of ``(task, seed)`` is stored and reused by the
    #: other runs of that seed (pretraining is deterministic); ``None``: pretrain in every run.
    pretrained_cache: str | None = None

    @property
    def key(self) -> str:
        """File-name-safe identity of the run: task, method, seed, step size and budget."""
        return f"{self.task.name}_{self.method}_seed{self.seed}_step{self.step_size:.6g}_budget{self.budget}"


#: The stream of a stored run that does not record one: runs were made with numpy's legacy
#: draws until the ``direction_stream`` setting came (its default is now ``"torch"``).
UNRECORDED_DIRECTION_STREAM = "legacy"


def _run_identity(task_settings: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
    """The task settings a run depends on besides its optimizer's.

    Left out: which methods a task runs, and ``zo_settings``: they configure the optimizer
    only, and :func:`_same_run` compares the optimizer's effective settings (defaults
    included) and the direction stream the run recorded instead.
    """
    identity = dict(task_settings)
    identity.pop("methods", None)
    identity.pop("zo_settings", None)
    return identity


def _same_run(record: Record, spec: "RunSpec") -> bool:
    """Whether a stored ``record`` is a run of ``spec``.

    Same key, relevant task settings, method fingerprint, direction stream and effective
    optimizer settings (:meth:`~comparisons.methods.Method.effective_settings`, defaults
    included).
    """
    stored = record.get("settings", {}).get("task")
    if stored is None:
        return False
    expected = json.loads(json.dumps(spec.task.settings()))  # as it would be stored
    fingerprint = METHODS[spec.method].fingerprint
    if fingerprint is not None and record["settings"].get("fingerprint") != fingerprint():
        return False  # e.g. a learned optimizer's weights were retrained since
    stream = METHODS[spec.method].direction_stream(spec.task.zo_settings)
    if stream is not None and record["settings"].get("direction_stream", UNRECORDED_DIRECTION_STREAM) != stream:
        return False  # other random numbers: another run
    if _run_identity(stored) != _run_identity(expected):
        return False
    effective = record["settings"].get("optimizer_settings")
    dimension = record.get("row", {}).get("dimension")
    if effective is None or dimension is None:
        return False  # made without a record of its optimizer's settings: nothing says they are today's
    task = spec.task
    # (last: it builds the optimizer's configuration) another optimizer, or a default changed since?
    return effective == METHODS[spec.method].effective_settings(task.num_directions, spec.step_size, dimension, task.zo_settings)


def step_grid(low: float, high: float, size: int) -> list[float]:
    """``size`` log-spaced step sizes from ``low`` to ``high``, rounded to 3 significant digits."""
    if not 0 < low <= high:
        raise ValueError(f"a step-size range needs 0 < low <= high, got ({low}, {high})")
    return [float(f"{value:.3g}") for value in np.geomspace(low, high, size)]


class _Checkpoints:
    """``minimize_vectorized`` callback recording the curve at fixed query thresholds."""

    def __init__(self, adapter: ModelAdapter, spec: RunSpec, metric: str, test: tp.Any) -> None:
        self.adapter = adapter
        self.metric = metric
        self.test = test
        self.thresholds = [spec.budget * i / spec.checkpoints for i in range(1, spec.checkpoints)]
        self.points: list[dict[str, float]] = []
        self.evaluation_time = 0.0
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds since the start, without the time spent evaluating checkpoints."""
        return time.perf_counter() - self.start - self.evaluation_time

    def record(self, theta: tp.Any) -> dict[str, float]:
        """Appends the point of parameter vector ``theta`` and returns it."""
        elapsed = self.elapsed()
        began = time.perf_counter()
        train = self.adapter.evaluate(theta)
        test = self.adapter.evaluate(theta, data=self.test)
        self.evaluation_time += time.perf_counter() - began
        point = {
            "checkpoint": len(self.points),
            "queries": self.adapter.queries,
            "sample_forwards": self.adapter.sample_forwards,
            "elapsed_time": elapsed,
            "train_loss": train["loss"],
            f"test_{self.metric}": test[self.metric],
        }
        self.points.append(point)
        return point

    def __call__(self, optimizer: base.Optimizer, candidates: tp.Any, losses: np.ndarray) -> None:
        crossed = sum(1 for threshold in self.thresholds if self.adapter.queries >= threshold)
        if crossed:
            point = self.record(optimizer.provide_recommendation())
            self.points.extend(dict(point) for _ in range(crossed - 1))
            del self.thresholds[:crossed]

    def finish(self, theta: tp.Any) -> None:
        """Records the end of the run, repeated for the thresholds the run never reached."""
        point = self.record(theta)
        self.points[-1:-1] = [dict(point) for _ in self.thresholds]
        for index, item in enumerate(self.points):
            item["checkpoint"] = index


class PeakMemory:
    """Context manager measuring the peak resident set size above its value on entry (``peak_bytes``)."""

    interval = 0.005

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._statm = Path("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if self._statm.exists() else 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _resident(self) -> int:
        return int(self._statm.read_text().split()[1]) * self._page

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._resident())

    def __enter__(self) -> "PeakMemory":
        if self._page:
            self._start = self._peak = self._resident()
            self._thread.start()
        else:
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc: tp.Any) -> None:
        if self._page:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, self._resident())
        else:
            self._peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_bytes = max(0, self._peak - self._start)


def execute_run(spec: RunSpec) -> Record:
    """Runs ``spec`` and returns ``{"key", "row", "curve", "settings"}`` (JSON-serialisable).

    The run uses one thread: torch's intra-op pool and the BLAS/OpenMP pools numpy and
    ``cma`` use (``threadpoolctl``).  Parallelism comes from running several runs at once;
    nested thread pools on a few cores spin-wait against each other (full CMA-ES ran up
    to 9x slower with two BLAS threads per worker on 2 cores).  It also sets the process's
    allocator to keep freed memory (:func:`nevergrad_zonp.reuse_freed_memory`), which
    makes the batched forwards 1.2-1.5x faster and leaves every number unchanged.
    """
    torch.set_num_threads(1)
    reuse_freed_memory()  # no page faults on every batched forward (see its docstring); results unchanged
    with threadpool_limits(limits=1):
        return _execute(spec)


def _execute(spec: RunSpec) -> Record:
    torch.manual_seed(spec.seed)
    task_spec = spec.task
    task = task_spec.build(seed=spec.seed, **task_spec.kwargs)
    if task_spec.metric not in task.metrics:
        raise ValueError(f"task {task.name!r} has no metric {task_spec.metric!r}; it has {sorted(task.metrics)}")
    if task_spec.pretrain_epochs:
        _pretrain(task, spec)  # (programs the chip, if any)
    trained_on = "chip" if task.chip is not None else "model"
    adapter = ModelAdapter.from_task(task, on=trained_on, batch_size=task_spec.batch_size, seed=spec.seed)
    method = METHODS[spec.method]
    configured = method.build(task_spec.num_directions, spec.step_size, adapter.dimension, task_spec.zo_settings)
    optimizer = configured(parametrization=adapter.parametrization, budget=spec.budget)
    optimizer.parametrization.random_state.seed(spec.seed)

    curve = _Checkpoints(adapter, spec, task_spec.metric, task.test)
    initial = curve.record(adapter.theta0)
    with PeakMemory() as memory:
        recommendation = minimize_vectorized(optimizer, adapter, callback=curve)
    elapsed = curve.elapsed()
    curve.finish(recommendation)

    train = adapter.evaluate(recommendation)
    test = adapter.evaluate(recommendation, data=task.test)
    row: Record = {
        "optimizer_name": spec.method,
        "budget": spec.budget,
        "loss": train["loss"],
        "seed": spec.seed,
        "elapsed_time": elapsed,
        "elapsed_budget": adapter.queries,
        "dimension": adapter.dimension,
        "num_workers": 1,
        "task": task_spec.name,
        "phase": spec.phase,
        "metric": task_spec.metric,
        "maximize": task_spec.maximize,
        "queries": adapter.queries,
        "fisher_queries": int(getattr(optimizer, "num_fisher_queries", 0)),
        "blocks": int(getattr(optimizer, "num_blocks", 1)),
        "blocks_with_fisher": int(getattr(optimizer, "num_blocks_with_fisher", 0)),
        "sample_forwards": adapter.sample_forwards,
        "step_name": method.step_name,
        "step_size": spec.step_size,
        "num_directions": task_spec.num_directions,
        "batch_size": task_spec.batch_size,
        "pretrain_epochs": task_spec.pretrain_epochs,
        "trained_on": trained_on,
        "initial_loss": initial["train_loss"],
        f"initial_test_{task_spec.metric}": initial[f"test_{task_spec.metric}"],
        "test_loss": test["loss"],
        "peak_memory_mb": memory.peak_bytes / 2**20,
    }
    row.update({f"train_{name}": value for name, value in train.items() if name != "loss"})
    row.update({f"test_{name}": value for name, value in test.items() if name != "loss"})
    settings = {
        "task": task_spec.settings(),
        "method": spec.method,
        "optimizer": repr(configured),
        "optimizer_settings": method.settings_of(configured),
        "seed": spec.seed,
        "step_name": method.step_name,
        "step_size": spec.step_size,
        "budget": spec.budget,
        "checkpoints": spec.checkpoints,
        "phase": spec.phase,
        "torch_threads": torch.get_num_threads(),
    }
    if method.fingerprint is not None:
        settings["fingerprint"] = method.fingerprint()
    stream = method.direction_stream(task_spec.zo_settings)
    if stream is not None:
        settings["direction_stream"] = stream
    return {"key": spec.key, "row": row, "curve": curve.points, "settings": settings}


def _pretrain(task: tp.Any, spec: RunSpec) -> None:
    """Backprop pretraining of ``task.model`` for ``spec`` (loaded from ``spec.pretrained_cache`` when stored), programmed onto the chip.

    Pretraining depends only on the task's builder and keyword arguments, the pretraining
    epochs, learning rate and batch size, and the seed (it draws from its own generator), so
    every run of a seed can share it: 15 epochs of the copying task take about 30 s, a
    fifth of a run.  The file name holds a digest of those settings and torch's version.
    """
    task_spec = spec.task
    settings = task_spec.settings()
    identity = {
        key: settings[key] for key in ("build", "kwargs", "pretrain_epochs", "pretrain_lr", "batch_size")
    } | {"seed": spec.seed, "torch": torch.__version__}
    path = None
    if spec.pretrained_cache is not None:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(spec.pretrained_cache) / f"{task_spec.name}_seed{spec.seed}_{digest}.pt"
        if path.exists():
            try:
                task.model.load_state_dict(torch.load(path, weights_only=True))
                if task.chip is not None:  # as pretrain() does: the stored setting programmed onto the chip
                    transfer_parameters(task.model, task.chip)
                return
            except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):
                pass  # unreadable (a run killed while writing it): pretrain again
    pretrain(task, epochs=task_spec.pretrain_epochs, lr=task_spec.pretrain_lr, batch_size=task_spec.batch_size, seed=spec.seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save(task.model.state_dict(), partial)
        os.replace(partial, path)


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace`` (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _load(path: Path) -> Record:
    with open(path) as stream:
        return json.load(stream)


class _Runs:
    """Submits runs to an executor or a Dask client, stores each one as it finishes, skips stored ones."""

    def __init__(
        self, out: Path, executor: concurrent.futures.Executor | None, client: tp.Any, progress: Progress | None
    ) -> None:
        self.folder = out / RUNS_DIR
        # Local processes share the folder; Dask workers may be on other machines.
        self.pretrained = None if client is not None else str(out / PRETRAINED_DIR)
        self.executor = executor
        self.client = client
        self.progress = progress
        self.seconds: dict[tuple[str, str], list[float]] = {}  # run times seen, by (task, method)

    def expected_seconds(self, spec: RunSpec) -> float:
        """Median run time of the same task and method so far (infinite if none: unknown runs go first)."""
        seen = self.seconds.get((spec.task.name, spec.method))
        return float(np.median(seen)) if seen else math.inf

    def _seen(self, spec: RunSpec, record: Record) -> None:
        elapsed = record["row"].get("elapsed_time")
        if elapsed is not None:
            self.seconds.setdefault((spec.task.name, spec.method), []).append(float(elapsed))

    def path(self, spec: RunSpec) -> Path:
        return self.folder / f"{spec.key}.json"

    def _submit(self, spec: RunSpec) -> tp.Any:
        spec = dataclasses.replace(spec, pretrained_cache=self.pretrained)
        if self.client is not None:
            return self.client.submit(execute_run, spec, pure=False)
        assert self.executor is not None
        return self.executor.submit(execute_run, spec)

    def run(self, specs: list[RunSpec]) -> dict[str, Record]:
        """Records of ``specs`` by key, running only those without a stored file."""
        records: dict[str, Record] = {}
        pending = {}
        missing = []
        for spec in specs:
            path = self.path(spec)
            stored = _load(path) if path.exists() else None
            if stored is not None and _same_run(stored, spec):
                records[spec.key] = stored
                self._seen(spec, stored)
                if self.progress is not None:
                    self.progress(spec, True)
            else:
                missing.append(spec)  # missing, or stored with other task settings (the file name does not hold them)
        # Longest first (by the run times seen for the same task and method; runs of a kind not
        # seen yet first of all; a stable sort keeps the given order otherwise), so that no long
        # run starts last and leaves the other workers idle before the next phase needs them all.
        for spec in sorted(missing, key=self.expected_seconds, reverse=True):
            pending[self._submit(spec)] = spec
        if self.client is not None:
            from distributed import as_completed as completed
        else:
            completed = concurrent.futures.as_completed
        for future in completed(list(pending)):
            spec = pending[future]
            record = future.result()
            write_atomic(self.path(spec), json.dumps(record, indent=1))
            records[spec.key] = record
            self._seen(spec, record)
            if self.progress is not None:
                self.progress(spec, False)
        return records


def step_score(losses: tp.Sequence[float]) -> float:
    """Score of one step size: the median of its final training losses over the tuning seeds (non-finite = inf)."""
    return float(np.median([loss if math.isfinite(loss) else math.inf for loss in losses]))


def choose_step(grid: list[float], scores: list[float]) -> float:
    """The grid point of lowest score (non-finite scores last; ties to the earlier, smaller step)."""
    finite = [score if math.isfinite(score) else math.inf for score in scores]
    return grid[int(np.argmin(finite))]


def extend_grid(grid: list[float], chosen: float) -> float | None:
    """The next point beyond the edge ``chosen`` sits on (same log ratio as the grid), else ``None``."""
    ordered = sorted(grid)
    if chosen == ordered[0]:
        return float(f"{ordered[0] ** 2 / ordered[1]:.3g}")
    if chosen == ordered[-1]:
        return float(f"{ordered[-1] ** 2 / ordered[-2]:.3g}")
    return None


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

    Writes ``settings.json`` (the suite), ``runs/<key>.json`` (one per run),
    ``tuning.json`` (grids, tuning losses, chosen step sizes, rule), ``results.csv`` (one
    row per run, tuning runs with ``phase = "tuning"``) and ``curves.csv`` (the curves,
    long format).  ``progress(spec, skipped)`` is called once per run.  See the module
    docstring for ``workers``, ``executor`` and ``client``.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SETTINGS_FILE, json.dumps(_merged_settings(folder / SETTINGS_FILE, suite.settings()), indent=1))
    unknown = [name for name in suite.methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if client is not None:
        _check_dask_workers(client)
    owned: concurrent.futures.Executor | None = None
    if client is None and executor is None:
        if workers > 1:
            owned = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        else:
            owned = concurrent.futures.ThreadPoolExecutor(1)
        executor = owned
    try:
        runs = _Runs(folder, executor, client, progress)
        grids = {
            (task.name, name): step_grid(*suite.step_ranges[METHODS[name].step_name], suite.grid_size)
            for task in suite.tasks
            for name in suite.methods_for(task)
            if suite.fixed_step(task, name) is None
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
        records = runs.run(tuning_specs)
        extensions = {key: 0 for key in grids}

        def scores_of(key: tuple[str, str]) -> list[float]:
            return [
                step_score([records[tuning_spec(*key, seed, step).key]["row"]["loss"] for seed in suite.tuning_seeds])
                for step in grids[key]
            ]

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
            records.update(runs.run(new_specs))
        tuning: dict[str, dict[str, tp.Any]] = {task.name: {} for task in suite.tasks}
        chosen: dict[tuple[str, str], float] = {}
        for key, grid in grids.items():
            scores = scores_of(key)
            chosen[key] = choose_step(grid, scores)
            tuning[key[0]][key[1]] = {
                "step_name": METHODS[key[1]].step_name,
                "grid": grid,
                "losses": [
                    [records[tuning_spec(*key, seed, step).key]["row"]["loss"] for seed in suite.tuning_seeds] for step in grid
                ],
                "scores": scores,
                "chosen": chosen[key],
                "at_edge": extend_grid(grid, chosen[key]) is not None,
                "extensions": extensions[key],
                "seeds": list(suite.tuning_seeds),
                "rule": TUNING_RULE,
            }
        for task in suite.tasks:
            for name in suite.methods_for(task):
                fixed = suite.fixed_step(task, name)
                if fixed is not None:
                    chosen[task.name, name] = fixed
                    tuning[task.name][name] = {"step_name": METHODS[name].step_name, "chosen": fixed, "rule": suite.steps_rule}
        write_atomic(folder / TUNING_FILE, json.dumps(_merged_tuning(folder / TUNING_FILE, tuning), indent=1))
        final_specs = [
            RunSpec(task, name, seed, chosen[task.name, name], task.budget or suite.budget, suite.checkpoints, "final")
            for task in suite.tasks
            for name in suite.methods_for(task)
            for seed in suite.seeds
        ]
        records.update(runs.run(final_specs))
    finally:
        if owned is not None:
            owned.shutdown()
    ordered = [records[spec.key] for spec in tuning_specs + final_specs]
    results = pd.DataFrame([record["row"] for record in ordered])
    curves = pd.DataFrame(
        [
            {"task": record["row"]["task"], "optimizer_name": record["row"]["optimizer_name"], "seed": record["row"]["seed"],
             "phase": record["row"]["phase"], "step_size": record["row"]["step_size"], **point}
            for record in ordered
            for point in record["curve"]
        ]
    )
    covered = {(task.name, name) for task in suite.tasks for name in suite.methods_for(task)}
    write_atomic(folder / RESULTS_FILE, _merged_table(folder / RESULTS_FILE, results, covered).to_csv(index=False))
    write_atomic(folder / CURVES_FILE, _merged_table(folder / CURVES_FILE, curves, covered).to_csv(index=False))
    return results


def _import_error_of_the_harness() -> str | None:
    """Run on a Dask worker: why it cannot import the harness, if it cannot."""
    import importlib

    try:
        importlib.import_module("comparisons.runner")
    except ImportError as error:
        return repr(error)
    return None


def _check_dask_workers(client: tp.Any) -> None:
    """Refuses a cluster whose workers cannot import the harness (their ``dask worker`` would exit at the first run)."""
    probe = _import_error_of_the_harness
    probe.__module__ = "__main__"  # sent by value: a worker that lacks the package cannot import it by name
    failures = {worker: error for worker, error in client.run(probe).items() if error}
    if failures:
        raise RuntimeError(
            f"Dask workers cannot import the comparison harness: {failures}; install nevergrad-zonp with its "
            "[comparisons] extra in every worker's environment (pip install '.[comparisons]' from the repository)"
        )


def _merged_settings(path: Path, settings: dict[str, tp.Any]) -> dict[str, tp.Any]:
    """``settings`` with the tasks and methods of the stored settings of the same suite it lacks.

    A folder shared by several suites (the ``update-rule`` suite run into the ``standard``
    suite's folder to reuse its runs) keeps the settings of the others under
    ``"other_suites"`` (suite name -> settings), so no suite's record is lost.
    """
    if not path.exists():
        return settings
    stored = json.loads(path.read_text())
    records: dict[str, tp.Any] = dict(stored.pop("other_suites", {}))
    if "name" in stored:
        records[stored["name"]] = stored
    previous = records.pop(settings["name"], None)
    merged = dict(settings)
    if previous is not None:
        names = {task["name"] for task in settings["tasks"]}
        merged["tasks"] = [task for task in previous.get("tasks", []) if task["name"] not in names] + settings["tasks"]
        merged["methods"] = list(dict.fromkeys([*previous.get("methods", []), *settings["methods"]]))
    if records:
        merged["other_suites"] = records
    return merged


def _merged_tuning(path: Path, tuning: dict[str, dict[str, tp.Any]]) -> dict[str, dict[str, tp.Any]]:
    """``tuning`` added to the one stored at ``path``: entries of other tasks and methods are kept.

    So a suite run in parts (``--tasks``, ``--methods``) into one folder reports all of them.
    """
    merged: dict[str, dict[str, tp.Any]] = json.loads(path.read_text()) if path.exists() else {}
    for task, entries in tuning.items():
        merged.setdefault(task, {}).update(entries)
    return merged


def _merged_table(path: Path, table: pd.DataFrame, covered: set[tuple[str, str]]) -> pd.DataFrame:
    """``table`` plus the stored rows of ``path`` whose (task, method) this run did not cover."""
    if not path.exists():
        return table
    stored = pd.read_csv(path)
    if stored.empty or not {"task", "optimizer_name"} <= set(stored.columns):
        return table
    pairs = zip(stored["task"], stored["optimizer_name"])
    kept = stored[[pair not in covered for pair in pairs]]
    return pd.concat([kept, table], ignore_index=True) if len(kept) else table
