"""The harness on a real Dask cluster: ``dask scheduler`` and ``dask worker --nworkers 2`` started outside the repository.

``tests/harness/test_harness.py`` runs a suite on an in-process cluster (``processes=False``), whose
workers share the test's interpreter and so import whatever the test imports.  Workers
started by Dask's own commands in another folder import ``comparisons`` only if it is
installed (``pyproject.toml``: ``include = ["nevergrad_zonp*", "comparisons*"]``); before
that they failed with "No module named 'comparisons'".  Here the scheduler and the workers
are separate processes started in a temporary folder with ``PYTHONPATH`` removed from
their environment, so neither the working directory nor the path can stand in for a
package that is not installed.

A worker that cannot unpickle a task (``comparisons.execution.execute_run``) drops its
connection and the ``dask worker`` command exits, so ``run_suite`` would wait forever: the
suite runs under a watchdog that fails the test, with the cluster's logs, instead.

About 20-30 s on 2 idle cores, most of it three processes importing torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed", reason="the Dask cluster test needs distributed (pip install distributed)")

from comparisons.runner import run_suite  # noqa: E402
from comparisons.storage import RESULTS_FILE, RUNS_DIR, TUNING_FILE  # noqa: E402
from comparisons.suites import Suite, TaskSpec  # noqa: E402
from nevergrad_zonp.tasks.equalization import equalization_task  # noqa: E402

WORKERS = 2
STARTUP_TIMEOUT = 90  # seconds, for the scheduler and the workers to come up (a loaded CI box is slow)
SUITE_TIMEOUT = 240  # seconds, for the tiny suite (seconds on 2 idle cores)
BUDGET = 400
# 2 methods x (2 grid points x 1 tuning seed + 1 seed) = 6 runs of 1-2 s each (at 400 queries
# ZONP skips its 283-query Fisher refresh: fewer queries would be left after it than it costs).
TINY = Suite(
    name="tiny-dask",
    tasks=(
        TaskSpec(
            name="equalization",
            build=equalization_task,  # module-level: pickled by reference, imported by the workers
            kwargs={"n_train": 200, "n_test": 200},
            metric="ser",
            maximize=False,
            pretrain_epochs=1,
        ),
    ),
    methods=("ZONP", "ZOI"),
    budget=BUDGET,
    seeds=(0,),
    tuning_seeds=(1000,),
    grid_size=2,
    checkpoints=2,
    max_extensions=0,
)


@dataclasses.dataclass
class Cluster:
    client: tp.Any
    folder: Path  # the working directory of the scheduler and the workers
    processes: list[subprocess.Popen]

    def logs(self) -> str:
        """The end of the scheduler's and the workers' logs, for failure messages."""
        parts = []
        for name in ("scheduler.log", "worker.log"):
            path = self.folder / name
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            parts.append(f"--- {name} ---\n{text[-6000:]}")
        return "\n".join(parts)

    def exited(self) -> list[str]:
        """The commands that have exited (a cluster in use should have none)."""
        return [f"dask {process.args[3]}" for process in self.processes if process.poll() is not None]


def _wait(processes: list[subprocess.Popen], seconds: float) -> None:
    """Waits at most ``seconds`` in all for ``processes`` to exit."""
    deadline = time.monotonic() + seconds
    for process in processes:
        try:
            process.wait(timeout=max(0.01, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def _stop(processes: list[subprocess.Popen], closing: bool) -> None:
    """Stops ``processes`` and the processes they started (each command runs in its own session).

    ``closing``: ``client.shutdown()`` has already asked the scheduler to close the nannies,
    the workers and itself, so they get a few seconds to exit by themselves (a worker process
    with torch loaded can take longer than that on a loaded machine); otherwise they are sent
    SIGTERM first.  Then what is left of their sessions is killed.
    """
    if not closing:
        for process in processes:
            if process.poll() is None:
                process.terminate()  # dask's commands close their nannies and workers on SIGTERM
    _wait(processes, 5)
    for process in processes:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the session's leftovers (e.g. worker processes)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and 2 worker processes (one nanny each) started by Dask's commands in a temporary folder."""
    folder = tmp_path_factory.mktemp("dask-cluster").resolve()
    scheduler_file = folder / "scheduler.json"
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    dask = [sys.executable, "-m", "dask"]  # the `dask` command of this interpreter
    started = Cluster(None, folder, [])
    logs = []
    closing = False

    def start(arguments: list[str], log: str) -> subprocess.Popen:
        stream = open(folder / log, "w")
        logs.append(stream)
        process = subprocess.Popen(
            dask + arguments, cwd=folder, env=environment, stdout=stream, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        started.processes.append(process)
        return process

    try:
        # --idle-timeout and --death-timeout: a cluster orphaned by a killed test shuts itself down
        scheduler = start(
            ["scheduler", "--scheduler-file", str(scheduler_file), "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--idle-timeout", "600"],
            "scheduler.log",
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if scheduler.poll() is not None:
                pytest.fail(f"dask scheduler exited with status {scheduler.returncode}\n{started.logs()}")
            try:
                address = json.loads(scheduler_file.read_text())["address"]
                break
            except (OSError, ValueError, KeyError):  # not written yet, or half written
                if time.monotonic() > deadline:
                    pytest.fail(f"no scheduler file after {STARTUP_TIMEOUT} s\n{started.logs()}")
                time.sleep(0.2)
        start(
            ["worker", "--scheduler-file", str(scheduler_file), "--nworkers", str(WORKERS), "--nthreads", "1",
             "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0", "--death-timeout", "60",
             "--local-directory", str(folder / "worker-space")],
            "worker.log",
        )
        started.client = distributed.Client(scheduler_file=str(scheduler_file), timeout=STARTUP_TIMEOUT)
        assert started.client.scheduler.address == address
        try:
            started.client.wait_for_workers(WORKERS, timeout=STARTUP_TIMEOUT)
        except TimeoutError:
            pytest.fail(f"fewer than {WORKERS} Dask workers after {STARTUP_TIMEOUT} s\n{started.logs()}")
        yield started
    finally:
        if started.client is not None:
            try:
                started.client.shutdown()  # the scheduler closes the workers and itself (and the client)
                closing = True
            except Exception:  # noqa: BLE001 - a scheduler already gone: _stop still ends the processes
                started.client.close()
        _stop(started.processes, closing)
        for stream in logs:
            stream.close()


def _where_comparisons_comes_from(client: tp.Any) -> dict[str, dict[str, tp.Any]]:
    """Per worker: its folder, its ``PYTHONPATH``, its pid and where it imports ``comparisons`` from."""

    def where() -> dict[str, tp.Any]:  # local: cloudpickle sends it by value (workers cannot import this module)
        import importlib
        import importlib.metadata
        import os

        found = {"cwd": os.getcwd(), "pythonpath": os.environ.get("PYTHONPATH"), "pid": os.getpid()}
        try:
            found["file"] = importlib.import_module("comparisons.runner").__file__
        except ImportError as error:
            found["error"] = repr(error)
        found["distributions"] = importlib.metadata.packages_distributions().get("comparisons", [])
        return found

    found = client.run(where)
    for worker, info in found.items():
        assert "error" not in info, (
            f"Dask worker {worker} cannot import comparisons ({info['error']}): is the package installed "
            f"(pip install -e .; pyproject.toml's packages include comparisons*)?"
        )
    return found


def test_workers_started_elsewhere_import_the_installed_comparisons_package(cluster):
    found = _where_comparisons_comes_from(cluster.client)
    pids = {info["pid"] for info in found.values()}
    assert len(found) == len(pids) == WORKERS and os.getpid() not in pids  # separate processes, not this one
    for info in found.values():
        assert Path(info["cwd"]).resolve() == cluster.folder and info["pythonpath"] is None
        assert not Path(info["file"]).resolve().is_relative_to(cluster.folder)
        # provided by the installed distribution (its top-level packages), not found by accident
        assert "nevergrad-zonp" in {name.lower().replace("_", "-") for name in info["distributions"]}, info


def _run_watched(cluster: Cluster, out: Path) -> pd.DataFrame:
    """``run_suite(TINY, out, client=...)``, failing the test if it outlives the workers or ``SUITE_TIMEOUT``."""
    outcome: dict[str, tp.Any] = {}

    def target() -> None:
        try:
            outcome["results"] = run_suite(TINY, out, client=cluster.client)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="run_suite", daemon=True)  # daemon: a hung one does not block exit
    thread.start()
    deadline = time.monotonic() + SUITE_TIMEOUT
    while thread.is_alive():
        thread.join(0.5)
        if thread.is_alive() and cluster.exited():
            thread.join(5)  # an error on its way back
            if thread.is_alive():
                pytest.fail(f"{cluster.exited()} exited while the suite was running\n{cluster.logs()}")
        if thread.is_alive() and time.monotonic() > deadline:
            pytest.fail(f"the suite did not finish in {SUITE_TIMEOUT} s\n{cluster.logs()}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]


def test_a_tiny_suite_runs_on_the_worker_processes(cluster, tmp_path):
    client = cluster.client
    _where_comparisons_comes_from(client)  # fails fast, with the reason: a worker that cannot unpickle a task exits
    out = tmp_path / "out"
    with distributed.get_task_stream(client) as stream:
        results = _run_watched(cluster, out)

    runs = 2 * (TINY.grid_size * len(TINY.tuning_seeds) + len(TINY.seeds))
    executed = [task for task in stream.data if str(task["key"]).startswith("execute_run")]
    assert len(executed) == runs and {task["worker"] for task in executed} <= set(client.scheduler_info()["workers"])

    stored = pd.read_csv(out / RESULTS_FILE)
    assert len(results) == len(stored) == runs == TINY.num_runs
    for name in TINY.methods:
        rows = stored[stored.optimizer_name == name]
        assert sorted(rows.phase) == ["final", "tuning", "tuning"], name
    assert stored.loss.map(math.isfinite).all() and stored.test_loss.map(math.isfinite).all()
    assert ((stored.queries > 0) & (stored.queries <= BUDGET)).all() and (stored.budget == BUDGET).all()
    assert (stored.trained_on == "chip").all() and (stored.task == "equalization").all()
    assert len(list((out / RUNS_DIR).glob("*.json"))) == runs
    tuning = json.loads((out / TUNING_FILE).read_text())["equalization"]
    assert set(tuning) == set(TINY.methods)
    for name, entry in tuning.items():
        final = stored[(stored.optimizer_name == name) & (stored.phase == "final")]
        assert (final.step_size == entry["chosen"]).all() and len(entry["grid"]) == TINY.grid_size
