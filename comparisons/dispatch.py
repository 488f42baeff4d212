"""Executing runs: executors, storing each outcome as it finishes, failures and interrupts.

:class:`Runs` submits runs (:func:`comparisons.execution.execute_run`) with
``submit(fn, *args)`` to a ``concurrent.futures.Executor`` or a Dask ``distributed.Client``,
skips those stored with the same settings (:func:`comparisons.storage.same_run`), and
stores each outcome in the submitting process by a done-callback of its future, the moment
the run ends: ``runs/<key>.json`` for a finished run, ``runs/failed/<key>.txt`` (its key,
error and full traceback) for one that raised.  Workers need no shared disk.  A stored file
that cannot be read is named in a warning, moved into ``runs/corrupt/`` and its run redone.

Failures: a run that raises does not stop the others; :class:`FailedRuns` names the failed
runs once everything else is stored.  A failure is not a stored run: the next call retries
it, and removes its traceback file when it succeeds.

Interrupts: :func:`stopping_runs` wraps the submitting code.  On SIGINT (Ctrl-C, to the
process alone or to its whole process group) or SIGTERM (``kill``, and how job schedulers
and service managers stop a job) the queued runs are cancelled, worker
processes of an owned pool (:func:`process_pool`: they ignore SIGINT themselves, so the
submitting process decides) are terminated (:func:`stop_now`), a run executing in this
process's thread stops at its next iteration (:data:`comparisons.execution.STOP`), every
finished run stays stored, and :class:`SuiteInterrupted` (a ``KeyboardInterrupt``) says how
many runs are kept.  Further SIGINTs and SIGTERMs are ignored during that shutdown
(:func:`first_interrupt_only`), which takes about a second.  A signal the process was
started ignoring stays ignored (a shell starts its background jobs ignoring SIGINT: stop
those with SIGTERM).  A passed executor's running
runs are left to it; a Dask client's pending runs are cancelled.

Dask: :func:`check_dask_workers` refuses a cluster whose workers cannot import the harness
before any run is sent.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .execution import STOP, Record, RunSpec, RunStopped, execute_run
from .storage import CORRUPT_DIR, FAILED_DIR, PRETRAINED_DIR, RUNS_DIR, load_run, same_run, set_aside, write_atomic

Progress = tp.Callable[[RunSpec, bool], None]


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


class StopSignal(KeyboardInterrupt):
    """SIGINT or SIGTERM received within :func:`first_interrupt_only`; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class SuiteInterrupted(KeyboardInterrupt):
    """A suite stopped by SIGINT (Ctrl-C) or SIGTERM: queued runs cancelled, running ones stopped, finished ones stored.

    ``kept``: runs of the suite stored in ``folder`` (reused ones included); ``finished``:
    those of them that finished during this call; ``signum``: the signal (SIGINT for a
    ``KeyboardInterrupt`` raised otherwise).
    """

    def __init__(self, folder: Path, kept: int, finished: int, signum: int = signal.SIGINT) -> None:
        self.folder = folder
        self.kept = kept
        self.finished = finished
        self.signum = signum
        super().__init__(f"interrupted: {kept} runs kept in {folder} ({finished} finished in this call)")


#: The signals that stop a suite, with the handler each has when nobody has set one: Python's
#: ``KeyboardInterrupt`` for SIGINT, termination for SIGTERM.
STOP_SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


@contextlib.contextmanager
def first_interrupt_only() -> tp.Iterator[None]:
    """Within the block, SIGINT or SIGTERM raises :class:`StopSignal` (a ``KeyboardInterrupt``) once; further ones are ignored.

    The shutdown that follows an interrupt (cancelling queued runs, terminating worker
    processes) takes a moment and must not be cut short by a second Ctrl-C, nor by the
    SIGTERM a scheduler may send after its SIGINT: worker processes left running would go on
    computing.  SIGTERM would otherwise end the process at once and leave its workers
    computing runs no one stores.  Outside the main thread nothing is changed; nor is a
    signal whose handler is not the default one (a caller's own handler, or SIG_IGN, as a
    shell sets SIGINT for background jobs).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    taken = [signum for signum, default in STOP_SIGNALS.items() if signal.getsignal(signum) is default]

    def interrupt(signum: int, frame: tp.Any) -> None:
        for each in taken:
            signal.signal(each, signal.SIG_IGN)  # the shutdown has begun
        raise StopSignal(signum)

    for signum in taken:
        signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum in taken:
            signal.signal(signum, STOP_SIGNALS[signum])


def worker_threads(workers: int, cores: int | None = None) -> int:
    """Torch intra-op threads of each of ``workers`` processes: the machine's cores shared out, at least 1.

    Each worker would otherwise start one thread per core, ``workers`` times as many threads
    as cores in all.  On the 2-core machine of ``comparisons/bench_workers.py`` the two made
    no measurable difference in wall time; the rule keeps larger models from
    oversubscribing.  The thread count does not change a run's numbers on the suites' tasks.
    """
    cores = os.cpu_count() if cores is None else cores
    return max(1, (cores or 1) // max(1, workers))


def _start_worker(threads: int) -> None:
    """Initializer of a :func:`process_pool` worker: ignores SIGINT, sets torch's intra-op threads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)


def process_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """``workers`` spawned processes that ignore SIGINT, each with :func:`worker_threads` torch threads.

    A terminal's Ctrl-C reaches the whole process group; the submitting process alone
    decides what an interrupt stops, and terminates the workers (:func:`stop_now`).
    """
    return concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start_worker,
        initargs=(worker_threads(workers),),
    )


def stop_now(executor: concurrent.futures.Executor) -> None:
    """Shuts ``executor`` down without waiting: queued runs cancelled, worker processes terminated.

    A thread cannot be killed: a run in a thread stops at its next iteration (:data:`STOP`).
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())  # no public handle before Python 3.14
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    # The pool's own thread may reap a worker at the same moment, which leaves is_alive() true
    # an instant longer: poll rather than trust one join.
    _wait_for_exit(processes, 2.0)
    for process in processes:
        if process.is_alive():
            process.kill()
    _wait_for_exit(processes, 1.0)


def _wait_for_exit(processes: tp.Sequence[tp.Any], seconds: float) -> None:
    """Waits up to ``seconds`` until none of ``processes`` is alive."""
    deadline = time.monotonic() + seconds
    while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


class Runs:
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
        STOP.clear()

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
            record = load_run(path)
        except ValueError as error:
            aside = set_aside(path, self.folder / CORRUPT_DIR)
            message = f"run file {path} is unreadable ({error}); moved to {aside}, the run is redone"
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return None
        # stored with other task settings (the file name does not hold them): redone
        return record if same_run(record, spec) else None

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
        STOP.set()
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


def local_executor(workers: int) -> concurrent.futures.Executor:
    """A one-thread executor for ``workers=1`` (runs in this process), else :func:`process_pool`."""
    return process_pool(workers) if workers > 1 else concurrent.futures.ThreadPoolExecutor(1)


@contextlib.contextmanager
def stopping_runs(runs: Runs, owned: concurrent.futures.Executor | None = None) -> tp.Iterator[None]:
    """Within the block, SIGINT or SIGTERM raises once (:func:`first_interrupt_only`); any exception stops ``runs``.

    On an exception, the runs not started yet are cancelled, those executing in this process
    stop at their next iteration, the ``owned`` executor's workers are terminated
    (:func:`stop_now`) and nothing more is stored; a ``KeyboardInterrupt`` becomes
    :class:`SuiteInterrupted`, any other exception propagates as it is.
    """
    with first_interrupt_only():  # (a second signal does not cut the shutdown short)
        try:
            yield
        except BaseException as error:
            runs.stop()
            if owned is not None:
                stop_now(owned)
            runs.close()
            if isinstance(error, KeyboardInterrupt):
                signum = error.signum if isinstance(error, StopSignal) else signal.SIGINT
                raise SuiteInterrupted(runs.folder, len(runs.kept), runs.finished, signum) from error
            raise


def _import_error_of_the_harness() -> str | None:
    """Run on a Dask worker: why it cannot import the harness, if it cannot."""
    import importlib

    try:
        importlib.import_module("comparisons.runner")
    except ImportError as error:
        return repr(error)
    return None


def check_dask_workers(client: tp.Any) -> None:
    """Refuses a cluster whose workers cannot import the harness (their ``dask worker`` would exit at the first run)."""
    probe = _import_error_of_the_harness
    probe.__module__ = "__main__"  # sent by value: a worker that lacks the package cannot import it by name
    failures = {worker: error for worker, error in client.run(probe).items() if error}
    if failures:
        raise RuntimeError(
            f"Dask workers cannot import the comparison harness: {failures}; install nevergrad-zonp with its "
            "[comparisons] extra in every worker's environment (pip install '.[comparisons]' from the repository)"
        )
