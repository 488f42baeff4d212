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

Resume: each run is written atomically to ``runs/<key>.json`` (key: task, method, seed,
step size, budget) the moment it finishes, by a done-callback of its future, whatever the
phase is waiting for; :func:`run_suite` skips runs whose file exists and was made with the
same settings, so an interrupted suite re-run only does what is missing.  A stored file
that cannot be read (truncated, empty, not a run record) is named in a warning, moved into
``runs/corrupt/`` and its run redone.  The backprop-pretrained model of a (task, seed) is
stored in ``pretrained/`` and reused by that seed's other runs (local executors only;
pretraining is deterministic, so results are the same): delete the folder after changing
a task's code.

Failures: a run that raises is recorded in ``runs/failed/<key>.txt`` (its key, error and
full traceback) and the other runs go on.  A failed tuning run counts as an infinite loss,
as a non-finite loss does (``tuning.json`` lists it under ``"failed"``); failed runs have no
row in the tables.  Once everything else is written, :class:`FailedRuns` names them; the
next call retries them (a failure is not a stored run) and removes their traceback files
when they succeed.

Interrupts: on SIGINT (Ctrl-C, to the process alone or to its whole process group) the
queued runs are cancelled, worker processes are terminated (they ignore SIGINT themselves,
so the submitting process decides), a run executing in this process's thread stops at its
next iteration, every finished run stays stored, and :class:`SuiteInterrupted` (a
``KeyboardInterrupt``) says how many runs are kept.  Further SIGINTs are ignored during that
shutdown, which takes about a second.  The command line then exits at once with status 130,
without waiting for a run still in the one-thread executor (pretraining and data loading
have no iteration at which to stop).

Parallelism: runs are submitted to an executor with ``submit(fn, *args)``:

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

Result files are written by the submitting process, so workers need no shared disk.  Every
file gets the mode ``open()`` would give it (``0o666`` less the umask).

A suite may be run in parts into one folder (the command line's ``--tasks`` and
``--methods``), one after the other or at the same time: ``settings.json``, ``tuning.json``,
``results.csv`` and ``curves.csv`` keep the entries of the tasks and methods a run did not
cover, and replace those it did.  Each read-merge-write of them holds the folder's lock
(``.lock``, :class:`filelock.FileLock`), so two processes merging into one folder keep
both's entries.  A stored table that cannot be parsed stops the merge with an error naming
it; rows a cut file left incomplete are left out with a warning naming their lines.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import pickle
import queue
import resource
import signal
import tempfile
import threading
import time
import traceback
import typing as tp
import warnings
from pathlib import Path

import filelock
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
#: Under ``runs/``: the traceback of each run that raised (``<key>.txt``), until it is redone.
FAILED_DIR = "failed"
#: Under ``runs/``: stored run files that could not be read, moved aside.
CORRUPT_DIR = "corrupt"
#: The lock file of a results folder, held around every read-merge-write of its shared files.
LOCK_FILE = ".lock"
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
        if _STOP.is_set():
            raise RunStopped("the suite was interrupted")
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


def _file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open()`` gives a new file.

    The umask is read from ``/proc/self/status`` where Linux has it (the current value);
    elsewhere once per process by :func:`_umask_read_once`.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o666 & ~_umask_read_once()


@functools.cache
def _umask_read_once() -> int:
    """The umask, read the only way POSIX offers: by setting another and setting it back.

    Meanwhile (a moment) it is ``0o077``, so a file another thread creates then is only
    more private, never more open.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    return umask


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace`` (never a partial file).

    The file gets the mode a plain ``open()`` would give it (``0o666`` less the umask), not
    the ``0o600`` of the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            os.fchmod(stream.fileno(), _file_mode())
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _read_json(path: Path) -> tp.Any:
    """The JSON content of a shared file, or an error naming the file."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); move it aside to start it afresh") from error


def _merge_lock(folder: Path) -> filelock.FileLock:
    """The lock every read-merge-write of the shared files of ``folder`` holds (``.lock``, an ``flock``)."""
    return filelock.FileLock(folder / LOCK_FILE)


#: Keys of a stored run record and the type of their value.
_RECORD_FIELDS = {"key": str, "row": dict, "curve": list, "settings": dict}


def _load(path: Path) -> Record:
    """The run record stored at ``path``; ``ValueError`` saying what is wrong with an unreadable one."""
    text = path.read_bytes()
    if not text.strip():
        raise ValueError("empty file")
    try:
        record = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not valid JSON: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"a JSON {type(record).__name__}, not a run record")
    for field, kind in _RECORD_FIELDS.items():
        if not isinstance(record.get(field), kind):
            raise ValueError(f"no {field!r} ({kind.__name__}) in the record")
    if record["key"] != path.stem:
        raise ValueError(f"the record of run {record['key']!r}, not of {path.stem!r}")
    return record


def _set_aside(path: Path, folder: Path) -> Path:
    """Moves ``path`` into ``folder`` under its own name (a numbered one if taken); returns where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    number = 0
    while target.exists():
        number += 1
        target = folder / f"{path.stem}.{number}{path.suffix}"
    os.replace(path, target)
    return target


class RunStopped(BaseException):
    """Raised inside a run that executes in this process once its suite has been interrupted.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way takes it for an error of the run.
    """


#: Set when a suite is interrupted: runs executing in this process (the one-thread
#: executor, an in-process Dask cluster) stop at their next iteration.
_STOP = threading.Event()


class FailedRuns(RuntimeError):
    """Runs raised; every other run was stored, the tables written with what finished.

    ``failed``: the failed runs' keys -> their traceback files (``runs/failed/<key>.txt``);
    ``results``: the results table of the runs that finished (``None`` where no table was
    written).  Running the suite again retries the failed runs only.
    """

    def __init__(self, failed: dict[str, Path], results: pd.DataFrame | None = None) -> None:
        self.failed = dict(failed)
        self.results = results
        folders = sorted({str(path.parent) for path in failed.values()})
        super().__init__(
            f"{len(failed)} run{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}; tracebacks in "
            f"{', '.join(folders)} (the other runs are stored; run the suite again to retry the failed ones)"
        )


class SuiteInterrupted(KeyboardInterrupt):
    """A suite stopped by SIGINT (Ctrl-C): queued runs cancelled, running ones stopped, finished ones stored.

    ``kept``: runs of the suite stored in ``folder`` (reused ones included); ``finished``:
    those of them that finished during this call.
    """

    def __init__(self, folder: Path, kept: int, finished: int) -> None:
        self.folder = folder
        self.kept = kept
        self.finished = finished
        super().__init__(f"interrupted: {kept} runs kept in {folder} ({finished} finished in this call)")


@contextlib.contextmanager
def first_interrupt_only() -> tp.Iterator[None]:
    """Within the block, SIGINT raises ``KeyboardInterrupt`` once; further ones are ignored.

    The shutdown that follows an interrupt (cancelling queued runs, terminating worker
    processes) takes a moment and must not be cut short by a second Ctrl-C: worker processes
    left running would go on computing.  Outside the main thread, or where SIGINT has a
    handler other than Python's default, nothing is changed.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not in_main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return

    def interrupt(signum: int, frame: tp.Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the shutdown has begun
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` spawned processes that ignore SIGINT.

    A terminal's Ctrl-C reaches the whole process group; the submitting process alone
    decides what an interrupt stops, and terminates the workers (:func:`_stop_now`).
    """
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=signal.signal,
        initargs=(signal.SIGINT, signal.SIG_IGN),
    )


def _stop_now(executor: concurrent.futures.Executor) -> None:
    """Shuts ``executor`` down without waiting: queued runs cancelled, worker processes terminated.

    A thread cannot be killed: a run in a thread stops at its next iteration (:data:`_STOP`).
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())  # no public handle before Python 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + 2.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


class _Runs:
    """Submits runs to an executor or a Dask client, stores each one as it finishes, skips stored ones.

    A run's outcome is stored by a done-callback of its future (in the thread that completes
    it), so it is on disk as soon as the run ends, whatever the submitting thread is doing:
    ``runs/<key>.json`` for a finished run, ``runs/failed/<key>.txt`` (its key, error and full
    traceback) for one that raised.  Stored files that cannot be read are moved into
    ``runs/corrupt/`` with a warning, and their runs redone.
    """

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
        self.failed: dict[str, Path] = {}  # key -> traceback file, of the runs that raised
        self.kept: set[str] = set()  # keys of the runs stored (reused or finished)
        self.finished = 0  # runs finished and stored by this object
        self._pending: list[tp.Any] = []  # futures submitted and not yet seen done
        self._lock = threading.Lock()  # one outcome stored at a time; none after close()
        self._stopping = False
        self._closed = False
        _STOP.clear()

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

    def failure_path(self, spec: RunSpec) -> Path:
        return self.folder / FAILED_DIR / f"{spec.key}.txt"

    def stored(self, spec: RunSpec) -> Record | None:
        """The stored record of ``spec``, if there is one made with its settings.

        An unreadable file is moved into ``runs/corrupt/`` (a warning names it) and ``None``
        returned, so the run is redone.
        """
        path = self.path(spec)
        if not path.exists():
            return None
        try:
            record = _load(path)
        except ValueError as error:
            aside = _set_aside(path, self.folder / CORRUPT_DIR)
            message = f"run file {path} is unreadable ({error}); moved to {aside}, the run is redone"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return None
        # stored with other task settings (the file name does not hold them): redone
        return record if _same_run(record, spec) else None

    def _submit(self, spec: RunSpec) -> tp.Any:
        spec = dataclasses.replace(spec, pretrained_cache=self.pretrained)
        if self.client is not None:
            return self.client.submit(execute_run, spec, pure=False)
        assert self.executor is not None
        return self.executor.submit(execute_run, spec)

    def _store(self, spec: RunSpec, future: tp.Any) -> tuple[str, tp.Any]:
        """Stores the outcome of ``spec``'s finished ``future``.

        Returns ``("stored", record)``, ``("failed", traceback file)`` or ``("stopped", None)``.
        """
        try:
            record, error = future.result(), None
        except BaseException as raised:  # noqa: BLE001 - the run's error, recorded below
            record, error = None, raised
        with self._lock:
            if self._closed:
                return "stopped", None
            if error is None:
                write_atomic(self.path(spec), json.dumps(record, indent=1))
                self.failure_path(spec).unlink(missing_ok=True)  # an earlier failure of this run, now redone
                self.finished += 1
                self.kept.add(spec.key)
                return "stored", record
            if self._stopping or isinstance(error, (KeyboardInterrupt, RunStopped)):
                return "stopped", None  # interrupted, cancelled or its worker terminated: not a failure of the run
            path = self.failure_path(spec)
            # (a process worker's traceback is chained as the error's cause; Dask re-raises with the worker's frames)
            trace = "".join(traceback.format_exception(error))
            write_atomic(path, f"run: {spec.key}\nphase: {spec.phase}\nerror: {error!r}\n\n{trace}")
            return "failed", path

    def _done(self, spec: RunSpec, outcomes: queue.SimpleQueue, future: tp.Any) -> None:
        """Done-callback of a run's future: stores its outcome and hands it to the waiting :meth:`run`."""
        try:
            outcome = self._store(spec, future)
        except BaseException as error:  # noqa: BLE001 - the outcome could not be stored: raised by run()
            outcome = ("error", error)
        outcomes.put((spec, future, outcome))

    def run(self, specs: list[RunSpec], *, keep_going: bool = False) -> dict[str, Record]:
        """Records of ``specs`` by key, running only those without a stored file.

        A run that raises does not stop the others: once they are all stored, ``FailedRuns``
        is raised; with ``keep_going`` the failed runs are left out of the returned records
        instead (and listed in ``failed``).  On any exception (``KeyboardInterrupt``
        included) the runs not started yet are cancelled before it propagates.
        """
        records: dict[str, Record] = {}
        missing = []
        for spec in specs:
            stored = self.stored(spec)
            if stored is not None:
                records[spec.key] = stored
                self.kept.add(spec.key)
                self._seen(spec, stored)
                if self.progress is not None:
                    self.progress(spec, True)
            else:
                missing.append(spec)
        outcomes: queue.SimpleQueue = queue.SimpleQueue()
        failed = []
        try:
            # Longest first (by the run times seen for the same task and method; runs of a kind not
            # seen yet first of all; a stable sort keeps the given order otherwise), so that no long
            # run starts last and leaves the other workers idle before the next phase needs them all.
            for spec in sorted(missing, key=self.expected_seconds, reverse=True):
                future = self._submit(spec)
                self._pending.append(future)
                future.add_done_callback(functools.partial(self._done, spec, outcomes))
            for _ in missing:
                spec, future, (kind, value) = outcomes.get()
                self._pending.remove(future)
                if kind == "error":
                    raise value
                if kind == "stored":
                    records[spec.key] = value
                    self._seen(spec, value)
                elif kind == "failed":
                    self.failed[spec.key] = value
                    failed.append(spec.key)
                if self.progress is not None:
                    self.progress(spec, False)
        except BaseException:
            self.stop()
            raise
        if failed and not keep_going:
            raise FailedRuns({key: self.failed[key] for key in failed})
        return records

    def forget_failures(self, pairs: set[tuple[str, str]], current: set[str]) -> None:
        """Removes the failure records of runs of the (task, method) ``pairs`` whose keys are not among ``current``.

        Such a run is no longer one of the suite's (a reported run at a step size that was
        chosen while tuning runs were failing, and is not chosen now): its failure is not a
        missing result.
        """
        prefixes = tuple(f"{task}_{method}_seed" for task, method in pairs)
        for path in (self.folder / FAILED_DIR).glob("*.txt"):
            if path.stem not in current and path.stem.startswith(prefixes):
                path.unlink()

    def stop(self) -> None:
        """Cancels the runs not started yet; runs executing in this process stop at their next iteration.

        Runs that finish after this are still stored (until :meth:`close`); errors after this
        (cancelled runs, terminated workers) are not recorded as failures.
        """
        self._stopping = True
        _STOP.set()
        pending = [future for future in self._pending if not future.done()]
        if self.client is None:
            for future in pending:
                future.cancel()
        elif pending:
            self.client.cancel(pending)

    def close(self) -> None:
        """Stores nothing more (waits for an outcome being stored): what is on disk now is what is kept."""
        with self._lock:
            self._closed = True


def step_score(losses: tp.Sequence[float | None]) -> float:
    """Score of one step size: the median of its final training losses over the tuning seeds.

    A non-finite loss, or ``None`` for a run that failed, counts as infinite.
    """
    return float(np.median([loss if loss is not None and math.isfinite(loss) else math.inf for loss in losses]))


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

    Writes ``settings.json`` (the suite), ``runs/<key>.json`` (one per run, as it finishes),
    ``tuning.json`` (grids, tuning losses, chosen step sizes, rule), ``results.csv`` (one
    row per run, tuning runs with ``phase = "tuning"``) and ``curves.csv`` (the curves,
    long format).  ``progress(spec, skipped)`` is called once per run.  See the module
    docstring for ``workers``, ``executor`` and ``client``.

    Raises :class:`FailedRuns` at the end, after writing everything else, when runs raised;
    :class:`SuiteInterrupted` (a ``KeyboardInterrupt``) on SIGINT, within seconds, with
    every finished run stored.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    with _merge_lock(folder):
        settings = _merged_settings(folder / SETTINGS_FILE, suite.settings())
        write_atomic(folder / SETTINGS_FILE, json.dumps(settings, indent=1))
    unknown = [name for name in suite.methods if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    if client is not None:
        _check_dask_workers(client)
    owned: concurrent.futures.Executor | None = None
    if client is None and executor is None:
        owned = _process_pool(workers) if workers > 1 else concurrent.futures.ThreadPoolExecutor(1)
        executor = owned
    runs = _Runs(folder, executor, client, progress)
    with first_interrupt_only():  # (a second SIGINT does not cut the shutdown short)
        try:
            results = _tune_and_run(suite, folder, runs)
        except BaseException as error:
            runs.stop()
            if owned is not None:
                _stop_now(owned)
            runs.close()
            if isinstance(error, KeyboardInterrupt):
                raise SuiteInterrupted(folder / RUNS_DIR, len(runs.kept), runs.finished) from error
            raise
    if owned is not None:
        owned.shutdown()  # (every run is done)
    if runs.failed:
        raise FailedRuns(runs.failed, results)
    return results


def _tune_and_run(suite: Suite, folder: Path, runs: _Runs) -> pd.DataFrame:
    """The protocol of :func:`run_suite`: tuning runs, grid extensions, ``tuning.json``, reported runs, tables.

    A failed tuning run counts as an infinite loss (as a non-finite loss does) and is listed
    under ``"failed"`` in its ``tuning.json`` entry; failed runs have no row in the tables.
    """
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
    chosen: dict[tuple[str, str], float] = {}
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
            if fixed is not None:
                chosen[task.name, name] = fixed
                tuning[task.name][name] = {"step_name": METHODS[name].step_name, "chosen": fixed, "rule": suite.steps_rule}
    with _merge_lock(folder):
        write_atomic(folder / TUNING_FILE, json.dumps(_merged_tuning(folder / TUNING_FILE, tuning), indent=1))
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
    with _merge_lock(folder):
        for name, table in ((RESULTS_FILE, results), (CURVES_FILE, curves)):
            merged = _merged_table(folder / name, table, covered)
            if len(merged.columns):  # (else no run finished and none is stored: no table to write)
                write_atomic(folder / name, merged.to_csv(index=False))
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
    stored = _read_json(path)
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
    merged: dict[str, dict[str, tp.Any]] = _read_json(path) if path.exists() else {}
    for task, entries in tuning.items():
        merged.setdefault(task, {}).update(entries)
    return merged


def incomplete_rows(text: str) -> list[range]:
    """The rows of CSV ``text`` that a cut or a damage left incomplete, as ranges of file lines (from 1).

    A row is incomplete when it has fewer or more fields than the header, or when it is the
    last one and the text does not end with a newline (``to_csv`` always writes one: the
    file was cut, and its last field may be cut too).  Blank lines are no rows (pandas skips
    them too).
    """
    reader = csv.reader(io.StringIO(text))
    width, previous, last = None, 0, None
    incomplete = []
    for row in reader:
        lines, previous = range(previous + 1, reader.line_num + 1), reader.line_num
        if not row:
            continue
        if width is None:
            width = len(row)
            continue
        last = lines
        if len(row) != width:
            incomplete.append(lines)
    if last is not None and not text.endswith("\n") and last not in incomplete:
        incomplete.append(last)
    return incomplete


def _merged_table(path: Path, table: pd.DataFrame, covered: set[tuple[str, str]]) -> pd.DataFrame:
    """``table`` plus the stored rows of ``path`` whose (task, method) this run did not cover.

    Incomplete stored rows (:func:`incomplete_rows`) are left out with a warning naming
    their lines: running the suite part that covers them writes them again.
    """
    if not path.exists():
        return table
    try:
        text = path.read_text(encoding="utf-8")
        stored = pd.read_csv(io.StringIO(text))
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ValueError(f"{path} cannot be read ({error}); move it aside to start it afresh") from error
    incomplete = [line for row in incomplete_rows(text) for line in row]
    if incomplete:
        warnings.warn(
            f"{path}: incomplete rows left out (line {', '.join(map(str, incomplete))}; the file was cut short or "
            "damaged): run the suite parts they belong to again to write them", RuntimeWarning, stacklevel=2,
        )
        stored = pd.read_csv(io.StringIO(text), skiprows=[line - 1 for line in incomplete])
    if not {"task", "optimizer_name"} <= set(stored.columns):
        raise ValueError(f"{path} has no 'task' and 'optimizer_name' columns; move it aside to start it afresh")
    pairs = zip(stored["task"], stored["optimizer_name"])
    kept = stored[[pair not in covered for pair in pairs]]
    if not len(kept):
        return table
    return pd.concat([kept, table], ignore_index=True) if len(table) else kept.reset_index(drop=True)
