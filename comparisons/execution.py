"""One run of the harness: a method with one step size on one task, from one seed, to one budget.

:func:`execute_run` builds the task from its seed, applies the suite's protocol (optional
backprop pretraining on the ideal model, parameters copied onto the chip), then trains by
ZO through :func:`nevergrad_zonp.minimize_vectorized` on the chip (or the model when the
task has no chip) until the query budget is spent.  An optimizer without an iteration or
population (NGOpt) goes through ``minimize_vectorized``'s per-candidate path: Nevergrad's
``ask`` and ``tell`` for every query, each on its own mini-batch, to the same budget.  It
returns a JSON-serialisable record ``{"key", "row", "curve", "settings"}``:

- ``curve``: ``checkpoints + 1`` points (start, ``budget * i / checkpoints`` queries for
  ``i < checkpoints``, end): queries, sample forwards, wall time, the **training loss of
  the recommendation evaluated on the full training split** and the task metric on the
  test split.  These evaluations are measurements: they are not counted as queries and
  their time is excluded from ``elapsed_time``;
- ``row``: Nevergrad's benchmark column names (``optimizer_name``, ``budget``,
  ``loss`` = final full-training-split loss, ``seed``, ``elapsed_time``,
  ``elapsed_budget`` = queries spent, ``dimension``, ``num_workers``) plus ours (``task``,
  ``phase``, ``queries``, ``fisher_queries``, ``sample_forwards``, ``step_name``,
  ``step_size``, ``test_loss``, ``test_<metric>``, ``train_<metric>``, ...), both step
  columns ``None`` for a method without a step size (NGOpt), plus the columns of the
  method's ``run_info`` (NGOpt: ``sub_optimizer``, the optimizer it chose);
- ``row["peak_memory_mb"]``: peak resident set size of the process during the training
  loop minus its value at the start of the loop (all allocations, torch included), sampled
  every 5 ms from ``/proc/self/statm`` by a background thread (:class:`PeakMemory`).
  Where ``/proc`` is missing it falls back to the growth of
  ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a lower bound in a reused process.  Runs
  sharing a process (threads, an in-process Dask cluster) see each other's allocations.
  ``tracemalloc`` is not used: it slows the Python-heavy baselines (CMA-ES, SNES) and
  would distort ``elapsed_time``;
- ``settings``: the task's settings, the optimizer's effective settings, the direction
  stream and fingerprint where the method has them (what :func:`comparisons.storage.same_run`
  compares to reuse a stored run).

Every run is seeded from its seed alone (the task's data and initialisation, torch's
global generator, the parametrization's ``random_state``, the adapter's mini-batch order)
and uses one thread, so two runs with the same seed give the same row apart from
:data:`MACHINE_COLUMNS`.

A run executing in this process stops at its next iteration, raising :class:`RunStopped`,
once :data:`STOP` is set (by an interrupted suite).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import resource
import threading
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch
from nevergrad.optimization import base
from threadpoolctl import threadpool_limits

from nevergrad_zonp import ModelAdapter, minimize_vectorized, reuse_freed_memory
from nevergrad_zonp.photonics import transfer_parameters
from nevergrad_zonp.tasks.base import pretrain

from .methods import METHODS
from .suites import TaskSpec

Record = dict[str, tp.Any]

#: Columns that measure the machine rather than the algorithm (excluded from determinism checks).
MACHINE_COLUMNS = ("elapsed_time", "peak_memory_mb")


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run: a method with one step size on one task, from one seed, to one budget.

    ``step_size`` is ``None`` for a method without a step size (NGOpt).
    """

    task: TaskSpec
    method: str
    seed: int
    step_size: float | None
    budget: int
    checkpoints: int
    phase: str
    #: Folder where the backprop-pretrained model of ``(task, seed)`` is stored and reused by the
    #: other runs of that seed (pretraining is deterministic); ``None``: pretrain in every run.
    pretrained_cache: str | None = None

    @property
    def key(self) -> str:
        """File-name-safe identity of the run: task, method, seed, step size (if the method has one) and budget."""
        step = "" if self.step_size is None else f"_step{self.step_size:.6g}"
        return f"{self.task.name}_{self.method}_seed{self.seed}{step}_budget{self.budget}"


class RunStopped(BaseException):
    """Raised inside a run that executes in this process once its suite has been interrupted.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` on the
    way takes it for an error of the run.
    """


#: Set when a suite is interrupted: runs executing in this process (the one-thread
#: executor, an in-process Dask cluster) stop at their next iteration.
STOP = threading.Event()


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
        if STOP.is_set():
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
    nested thread pools on a few cores spin-wait against each other.  It also sets the
    process's allocator to keep freed memory (:func:`nevergrad_zonp.reuse_freed_memory`),
    which makes the batched forwards faster and leaves every number unchanged.

    Raises ``ValueError`` when the task has no metric ``spec.task.metric``, and
    :class:`RunStopped` when :data:`STOP` is set during the training loop.
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
    if method.run_info is not None:
        row.update(method.run_info(optimizer))
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
    every run of a seed can share it.  The file name holds a digest of those settings and
    torch's version; an unreadable stored file (a run killed while writing it) is
    pretrained again.
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
