"""The comparison harness under faults: interrupts, failing runs, corrupt files, concurrent merges, bad tables, umask.

The suites here run a tiny classifier (a linear layer on 40 random samples) for a few
dozen queries, a fraction of a second a run.  Its builder, :func:`tiny_task`, is a
module-level function of this module, so that the worker processes of a suite (spawned:
they get this process's ``sys.path``, which holds this folder) can import it.  A run is
made to fail, or to hang, by a file next to the results: ``fail_<seed>`` makes the run of
that seed raise, ``slow_<seed>`` makes it sleep for a minute; the builder's keyword
arguments (part of a run's stored identity) stay the same, so a fault can be removed and
the suite resumed.

The interrupt test starts the command line twice, each in a new session (its own process
group), and sends SIGINT to the main process alone (``kill -INT``, a job scheduler, a
notebook's interrupt) or to the whole group (a terminal's Ctrl-C).  Both commands start at
once; Python and torch starting in them is about half of this module's time (20-35 s on
two busy cores).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import typing as tp
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from comparisons import report as report_module
from comparisons import dispatch, execution, runner
from comparisons.dispatch import FailedRuns, SuiteInterrupted
from comparisons.execution import MACHINE_COLUMNS, RunSpec, execute_run
from comparisons.report import ReportError, ReportWarning, write_report
from comparisons.runner import run_suite
from comparisons.storage import write_atomic
from comparisons.suites import Suite, TaskSpec
from nevergrad_zonp.losses import accuracy
from nevergrad_zonp.tasks.base import Task

TESTS = Path(__file__).resolve().parent
REPOSITORY = TESTS.parents[1]
EXIT_SECONDS = 5.0  # an interrupted suite exits within this time


class Crawling(torch.nn.Linear):
    """A linear layer that takes 10 ms a call: a run that lasts, one short iteration after another."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return super().forward(inputs)


def tiny_task(seed: int, faults: str) -> Task:
    """A 3-class linear classifier on 40 samples.

    ``faults``: the folder of the files that make the run of a seed raise (``fail_<seed>``),
    hang in this builder (``slow_<seed>``) or crawl (``crawl_<seed>``: 10 ms a forward).
    """
    folder = Path(faults)
    if (folder / f"fail_{seed}").exists():
        raise RuntimeError(f"broken data for seed {seed}")
    if (folder / f"slow_{seed}").exists():
        (folder / f"started_{seed}").touch()
        time.sleep(60)
    crawling = (folder / f"crawl_{seed}").exists()
    if crawling:
        (folder / f"started_{seed}").touch()
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(40, 4, generator=generator)
    targets = torch.randint(0, 3, (40,), generator=generator)
    torch.manual_seed(seed)
    model = (Crawling if crawling else torch.nn.Linear)(4, 3)
    return Task("tiny", model, (inputs[:30], targets[:30]), (inputs[30:], targets[30:]), "categorical", F.cross_entropy,
                {"accuracy": accuracy})


def tiny_suite(faults: Path, **changes: tp.Any) -> Suite:
    """ZOI and ZOco on :func:`tiny_task`: a 2-point grid on 2 tuning seeds, then 2 reported seeds (12 runs)."""
    task = TaskSpec("tiny", tiny_task, kwargs={"faults": str(faults)}, batch_size=10, num_directions=2)
    settings = dict(name="faults", tasks=(task,), methods=("ZOI", "ZOco"), budget=40, seeds=(0, 1), tuning_seeds=(100, 101),
                    grid_size=2, checkpoints=2, max_extensions=0)
    return Suite(**{**settings, **changes})


def slow_suite(faults: Path) -> Suite:
    """ZOI with a fixed step on 6 seeds (no tuning): for the interrupt tests."""
    return tiny_suite(faults, methods=("ZOI",), seeds=tuple(range(6)), fixed_steps={"tiny": {"ZOI": 0.01}},
                      steps_rule="fixed for the test.")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A folder with every run of :func:`tiny_suite` stored, and its tables."""
    folder = tmp_path_factory.mktemp("stored")
    faults = tmp_path_factory.mktemp("no-faults")
    suite = tiny_suite(faults)
    run_suite(suite, folder)
    return folder, suite


@pytest.fixture
def no_plots(monkeypatch):
    """Reports without their PNGs (slow to draw; these tests read the markdown)."""
    monkeypatch.setattr(report_module, "plot_curves", lambda *args: None)


def copy_of(stored, tmp_path: Path) -> Path:
    source, _ = stored
    folder = tmp_path / "copy"
    shutil.copytree(source, folder)
    return folder


# ----- a run that raises ---------------------------------------------------------------------
def test_a_run_that_raises_is_recorded_with_its_traceback_the_others_are_kept_and_it_is_retried(tmp_path, monkeypatch, executed_runs):
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "fail_1").touch()  # a reported seed: both methods' runs of seed 1 raise
    (faults / "fail_101").touch()  # a tuning seed: every grid point's run on it raises
    suite = tiny_suite(faults)
    out = tmp_path / "out"
    with pytest.raises(FailedRuns) as raised:
        run_suite(suite, out)
    failed = raised.value.failed
    assert len(failed) == 2 * 2 + 2 and all("seed1_" in key or "seed101_" in key for key in failed)
    assert all(key in str(raised.value) for key in failed) and str(out / "runs" / "failed") in str(raised.value)
    for key, path in failed.items():
        assert path == out / "runs" / "failed" / f"{key}.txt"
        text = path.read_text()
        assert text.startswith(f"run: {key}\n") and "Traceback (most recent call last)" in text
        assert "RuntimeError: broken data for seed" in text and "tiny_task" in text  # the frame that raised
    stored_runs = sorted(path.stem for path in (out / "runs").glob("*.json"))
    assert len(stored_runs) == suite.num_runs - len(failed) == 6 and not set(stored_runs) & set(failed)
    # the tables hold what finished; the tuning entry says which runs failed, counted as infinite
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 6 and 1 not in set(results.seed) and 101 not in set(results.seed)
    tuning = json.loads((out / "tuning.json").read_text())["tiny"]
    for name, entry in tuning.items():
        assert sorted(entry["failed"]) == sorted(key for key in failed if f"_{name}_seed101_" in key)
        assert all(losses[1] is None for losses in entry["losses"]) and entry["scores"] == [float("inf")] * 2
    # the next call retries the failed runs and redoes no stored one; their failures are forgotten once they succeed
    (faults / "fail_1").unlink()
    (faults / "fail_101").unlink()
    executed = executed_runs()
    results = run_suite(suite, out)
    keys = {spec.key for spec in executed}
    assert {key for key in failed if "seed101_" in key} <= keys and not keys & set(stored_runs)
    # Seed 101's losses may move the choice: the reported runs at the new step are new runs, and the
    # failures of those at the former one are forgotten with them (no longer runs of the suite).
    assert all(spec.phase == "final" for spec in executed if spec.key not in failed)
    assert not list((out / "runs" / "failed").iterdir()) and len(results) == suite.num_runs


def test_the_run_command_names_the_failed_runs_and_exits_non_zero(tmp_path, monkeypatch, capsys, no_plots):
    from comparisons import __main__ as cli
    from comparisons import suites

    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "fail_0").touch()
    monkeypatch.setitem(suites.SUITES, "faults", lambda: tiny_suite(faults, methods=("ZOI",)))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--suite", "faults", "--out", str(out)])
    message = str(exited.value.code)
    key = "tiny_ZOI_seed0_step"
    assert message.startswith("error: 1 run failed: ") and key in message and str(out / "runs" / "failed") in message
    output = capsys.readouterr()
    assert f"report: {out / 'report.md'}" in output.out  # the runs that finished are reported
    assert "report: left out: 1 failed run(s), not in the tables" in output.err
    report = (out / "report.md").read_text()
    assert "1 failed run(s), not in the tables" in report and key in report


# ----- corrupt run files ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, reason",
    [(b'{"key": "tiny_ZOI_seed0', "not valid JSON"), (b"", "empty file"), (b"[]", "a JSON list"),
     (b'{"key": "x", "rows": []}', "no 'row'")],
    ids=["truncated", "empty", "list", "other-keys"],
)
def test_a_corrupt_run_file_is_named_moved_aside_and_redone(stored, tmp_path, monkeypatch, content, reason, executed_runs):
    folder = copy_of(stored, tmp_path)
    (broken,) = (folder / "runs").glob("tiny_ZOI_seed0_step*.json")  # a reported run
    broken.write_bytes(content)
    executed = executed_runs()
    with pytest.warns(RuntimeWarning, match=rf"run file {re.escape(str(broken))} is unreadable \({reason}.*moved to .*corrupt"):
        run_suite(stored[1], folder)
    assert [spec.key for spec in executed] == [broken.stem]
    assert (folder / "runs" / "corrupt" / broken.name).read_bytes() == content  # set aside, not deleted
    assert json.loads(broken.read_text())["key"] == broken.stem


# ----- concurrent merges ---------------------------------------------------------------------
@pytest.mark.parametrize("locked", [True, False], ids=["with-the-lock", "without-it"])
def test_two_suites_merging_different_methods_into_one_folder_keep_both(stored, tmp_path, monkeypatch, locked):
    """Both merges start together (a barrier) and wait a moment between reading and writing.

    Without the lock the second write loses the first one's entries: the window is real.
    The lock is an ``flock`` on a file descriptor, so two threads exclude each other as two
    processes do.
    """
    source, suite = stored
    folder = tmp_path / "shared"
    shutil.copytree(source / "runs", folder / "runs")  # no run is executed: only the merges
    barrier = threading.Barrier(2, timeout=60)
    real_lock = runner.merge_lock

    def merge_lock(path):
        barrier.wait()
        return real_lock(path) if locked else contextlib.nullcontext()

    monkeypatch.setattr(runner, "merge_lock", merge_lock)
    for name in ("merged_settings", "merged_tuning", "merged_table"):
        real = getattr(runner, name)
        monkeypatch.setattr(runner, name, lambda *args, _real=real: (_real(*args), time.sleep(0.2))[0])
    errors = []

    def part(method):
        try:
            run_suite(suite.restricted_to(methods=[method]), folder)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)

    threads = [threading.Thread(target=part, args=(method,)) for method in ("ZOI", "ZOco")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    methods = {
        "settings.json": set(json.loads((folder / "settings.json").read_text())["methods"]),
        "tuning.json": set(json.loads((folder / "tuning.json").read_text())["tiny"]),
        "results.csv": set(pd.read_csv(folder / "results.csv").optimizer_name),
        "curves.csv": set(pd.read_csv(folder / "curves.csv").optimizer_name),
    }
    if locked:
        assert all(found == {"ZOI", "ZOco"} for found in methods.values()), methods
        merged = pd.read_csv(folder / "results.csv").drop(columns=list(MACHINE_COLUMNS))
        expected = pd.read_csv(source / "results.csv").drop(columns=list(MACHINE_COLUMNS))
        key = ["optimizer_name", "phase", "seed", "step_size"]
        pd.testing.assert_frame_equal(
            merged.sort_values(key).reset_index(drop=True), expected.sort_values(key).reset_index(drop=True)
        )
    else:
        assert all(len(found) == 1 for found in methods.values()), methods


# ----- the report on damaged tables ----------------------------------------------------------
def test_the_report_leaves_out_the_rows_of_a_cut_results_file_and_says_so(stored, tmp_path, no_plots):
    folder = copy_of(stored, tmp_path)
    text = (folder / "results.csv").read_text()
    (folder / "results.csv").write_text(text[: text.rindex(",")])  # the last row cut in its last field
    lines = len(text.splitlines())
    with pytest.warns(ReportWarning, match=rf"results.csv: 1 incomplete row\(s\) left out \(line {lines}\)"):
        report = write_report(folder).read_text()
    assert f"- results.csv: 1 incomplete row(s) left out (line {lines})" in report
    assert "| ZOI | lr = " in report and "| ZOco | lr = " in report  # the tables are there
    # a row with fewer fields than the header, in the middle of curves.csv
    (folder / "results.csv").write_text(text)
    curves = (folder / "curves.csv").read_text().splitlines(keepends=True)
    curves[3] = curves[3][: curves[3].index(",", 10)] + "\n"
    (folder / "curves.csv").write_text("".join(curves))
    with pytest.warns(ReportWarning, match=r"curves.csv: 1 incomplete row\(s\) left out \(line 4\)"):
        write_report(folder)


def test_the_rows_of_a_cut_table_are_not_merged_into_the_next_one_unnoticed(stored, tmp_path):
    folder = copy_of(stored, tmp_path)
    text = (folder / "results.csv").read_text()
    (folder / "results.csv").write_text(text[: text.rindex(",")])  # a ZOco row (the last) cut
    lines = len(text.splitlines())
    with pytest.warns(RuntimeWarning, match=rf"results.csv: incomplete rows left out \(line {lines};"):
        run_suite(stored[1].restricted_to(methods=["ZOI"]), folder)
    assert pd.read_csv(folder / "results.csv").optimizer_name.value_counts().to_dict() == {"ZOI": 6, "ZOco": 5}
    run_suite(stored[1].restricted_to(methods=["ZOco"]), folder)  # the part the row belongs to writes it again
    assert pd.read_csv(folder / "results.csv").optimizer_name.value_counts().to_dict() == {"ZOI": 6, "ZOco": 6}


def renamed(column: str) -> tp.Callable[[str], str]:
    """A damage: ``column`` renamed in a CSV file's header."""

    def damage(text: str) -> str:
        header, rest = text.split("\n", 1)
        return ",".join(f"{name}_renamed" if name == column else name for name in header.split(",")) + "\n" + rest

    return damage


@pytest.mark.parametrize(
    "name, damage, message",
    [
        ("results.csv", lambda text: text[:25], r"results.csv has no column task, phase, "),
        ("results.csv", lambda text: "", r"results.csv cannot be read: No columns to parse"),
        ("curves.csv", renamed("train_loss"), r"curves.csv has no column train_loss \(cut short"),
        ("results.csv", renamed("test_accuracy"), r"results.csv has no column test_accuracy \(the metric of task 'tiny'\)"),
        ("tuning.json", lambda text: text[: len(text) // 2], r"tuning.json cannot be read: "),
        ("tuning.json", lambda text: "[]", r"tuning.json is not a mapping task -> method -> entry"),
    ],
    ids=["results-cut-in-its-header", "results-empty", "curves-without-a-column", "results-without-the-metric",
         "tuning-cut", "tuning-a-list"],
)
def test_the_report_names_a_file_it_cannot_read(stored, tmp_path, name, damage, message):
    folder = copy_of(stored, tmp_path)
    path = folder / name
    path.write_text(damage(path.read_text()))
    with pytest.raises(ReportError, match=message) as raised:
        write_report(folder)
    assert str(raised.value).startswith(str(path))
    assert not (folder / "report.md").exists()


def test_the_report_command_exits_non_zero_naming_the_file(stored, tmp_path, capsys):
    from comparisons import __main__ as cli

    folder = copy_of(stored, tmp_path)
    (folder / "results.csv").unlink()
    with pytest.raises(SystemExit) as exited:
        cli.main(["report", str(folder)])
    assert exited.value.code == 1 and f"report: not written: {folder / 'results.csv'} is missing" in capsys.readouterr().err


def test_a_report_without_reported_runs_says_so(stored, tmp_path, no_plots):
    folder = copy_of(stored, tmp_path)
    results = pd.read_csv(folder / "results.csv")
    results[results.phase == "tuning"].to_csv(folder / "results.csv", index=False)
    with pytest.warns(ReportWarning, match="no reported run"):
        report = write_report(folder).read_text()
    assert "results.csv has no reported run (phase final) yet: there is no table to show" in report


# ----- file modes ----------------------------------------------------------------------------
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, monkeypatch, umask, mode):
    monkeypatch.setattr(execution, "pretrain", lambda *args, **kwargs: None)  # (the file is what is checked)
    previous = os.umask(umask)
    try:
        write_atomic(tmp_path / "file.json", "{}")
        assert stat.S_IMODE((tmp_path / "file.json").stat().st_mode) == mode
        task = TaskSpec("tiny", tiny_task, kwargs={"faults": str(tmp_path)}, batch_size=10, pretrain_epochs=1)
        execute_run(RunSpec(task, "ZOI", 0, 0.01, 20, 1, "final", pretrained_cache=str(tmp_path / "pretrained")))
        (cached,) = (tmp_path / "pretrained").iterdir()
        assert stat.S_IMODE(cached.stat().st_mode) == mode
    finally:
        os.umask(previous)


# ----- interrupts ----------------------------------------------------------------------------
def _ignores_sigint(pid: int) -> bool:
    """Whether process ``pid`` ignores SIGINT (Linux: its ``SigIgn`` mask)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal masks in /proc")
def test_worker_processes_ignore_sigint_and_an_interrupt_terminates_them_at_once():
    """The pool of ``--workers N``: Ctrl-C to the process group leaves the workers to the main process, which ends them."""
    pool = dispatch.process_pool(2)
    futures = [pool.submit(time.sleep, 60) for _ in range(4)]  # two running, the others queued
    processes = list(pool._processes.values())
    deadline = time.monotonic() + 60
    while not (len(processes) == 2 and all(process.pid and _ignores_sigint(process.pid) for process in processes)):
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.05)
        processes = list(pool._processes.values())
    for process in processes:
        os.kill(process.pid, signal.SIGINT)
    time.sleep(0.3)
    assert all(process.is_alive() for process in processes)
    began = time.monotonic()
    dispatch.stop_now(pool)
    assert time.monotonic() - began < 3 and not any(process.is_alive() for process in processes)
    assert futures[-1].cancelled()


def test_workers_share_the_cores_out_instead_of_each_starting_a_thread_per_core():
    """``--workers N`` on C cores: C // N torch threads a worker (at least 1), so N workers never oversubscribe."""
    assert dispatch.worker_threads(2, cores=2) == 1
    assert dispatch.worker_threads(2, cores=16) == 8
    assert dispatch.worker_threads(4, cores=2) == 1
    assert dispatch.worker_threads(1, cores=3) == 3
    pool = dispatch.process_pool(2)
    try:
        assert pool.submit(torch.get_num_threads).result(timeout=120) == dispatch.worker_threads(2)
    finally:
        pool.shutdown()


def test_an_interrupted_suite_in_this_process_stops_its_running_run_at_its_next_iteration(tmp_path):
    """``run_suite`` from Python (a notebook): SIGINT raises ``SuiteInterrupted`` at once, the run in its thread stops soon after."""
    faults, out = tmp_path / "faults", tmp_path / "out"
    faults.mkdir()
    (faults / "crawl_1").touch()
    suite = dataclasses.replace(slow_suite(faults), budget=3000)  # seed 0: a second; seed 1: over 10 s
    before = set(threading.enumerate())
    running = threading.Event()
    sent = []

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while not (faults / "started_1").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a few iterations in
        if running.is_set():
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    running.set()
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        with pytest.raises(SuiteInterrupted) as raised:
            run_suite(suite, out)
    finally:
        running.clear()
    assert sent and time.monotonic() - sent[0] < 2
    assert (raised.value.kept, raised.value.finished) == (1, 1) and len(list((out / "runs").glob("*.json"))) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's handler is back
    workers = [thread for thread in threading.enumerate() if thread not in before and thread.name.startswith("ThreadPool")]
    for thread in workers:
        thread.join(2)
    assert not any(thread.is_alive() for thread in workers), "the run in the executor's thread did not stop"


COMMAND = """
import sys
sys.path.insert(0, {tests!r})
import test_harness_faults as faults
from comparisons import suites
from comparisons.__main__ import main

suites.SUITES["faults"] = lambda: faults.slow_suite(faults.Path({faults!r}))
main(["run", "--suite", "faults", "--out", {out!r}, "--workers", "{workers}"])
"""


@dataclasses.dataclass
class InterruptedCommand:
    """The run command on :func:`slow_suite`, in a session of its own, interrupted once seeds 0 and 1 are stored.

    The next ``workers`` runs hang (sleeping in their task's builder, where no stop can
    reach them), the others are queued.  ``target``: ``"process"`` sends SIGINT to the main
    process alone, ``"group"`` to its whole process group; ``twice``: a second SIGINT
    follows 0.05 s later, during the shutdown the first one began; ``signum``: the signal
    sent (SIGINT, or SIGTERM as ``kill`` and job schedulers send it).
    """

    folder: Path
    target: str
    twice: bool
    workers: int = 1
    signum: int = signal.SIGINT

    def __post_init__(self) -> None:
        self.faults, self.out, self.log = self.folder / "faults", self.folder / "out", self.folder / "log.txt"
        self.faults.mkdir(parents=True)
        self.hanging = list(range(2, 2 + self.workers))
        for seed in self.hanging:
            (self.faults / f"slow_{seed}").touch()

    def start(self) -> None:
        script = COMMAND.format(tests=str(TESTS), faults=str(self.faults), out=str(self.out), workers=self.workers)
        with open(self.log, "w") as stream:
            self.process = subprocess.Popen(
                [sys.executable, "-c", script], cwd=REPOSITORY, stdout=stream, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, umask=0o022,
            )

    def ready(self) -> bool:
        stored = all(next((self.out / "runs").glob(f"tiny_ZOI_seed{seed}_*.json"), None) for seed in (0, 1))
        return stored and all((self.faults / f"started_{seed}").exists() for seed in self.hanging)

    def interrupt(self) -> None:
        """Waits until it is ready, sends the SIGINT(s), waits for the exit: ``status``, ``seconds``, ``gone``."""
        deadline = time.monotonic() + 180  # starting Python and torch (and the workers) on a busy machine
        while not self.ready():
            assert self.process.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)
        self.finished = sorted((self.out / "runs").glob("*.json"))
        sent = time.monotonic()
        send = os.killpg if self.target == "group" else os.kill
        send(self.process.pid, self.signum)
        if self.twice:
            time.sleep(0.05)
            send(self.process.pid, self.signum)
        self.status = self.process.wait(timeout=30)
        self.seconds = time.monotonic() - sent
        self.gone = _group_is_gone(self.process.pid, EXIT_SECONDS)

    def kill(self) -> None:
        """Ends what is left of its session (after a failure), workers that outlived the main process included."""
        if getattr(self, "process", None) is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def _group_is_gone(group: int, seconds: float) -> bool:
    """Whether every process of ``group`` has exited within ``seconds`` (no worker left computing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_an_interrupted_suite_keeps_its_finished_runs_and_exits_within_seconds(tmp_path, monkeypatch, no_plots, executed_runs):
    """SIGINT twice to the main process alone, Ctrl-C to the process group, SIGTERM to a pool's main process.

    The three commands start at once.  The hanging run is in the thread of ``--workers 1``,
    the case where nothing can stop it: the command exits without waiting for it.  SIGTERM
    goes to ``--workers 2``, whose workers would go on computing if the main process simply
    died: they must be gone too (the test above checks the pool under Ctrl-C).
    """
    commands = {
        "SIGINT to the main process, twice": InterruptedCommand(tmp_path / "process", "process", twice=True),
        "Ctrl-C to the process group": InterruptedCommand(tmp_path / "group", "group", twice=False),
        "SIGTERM to the main process of a pool": InterruptedCommand(
            tmp_path / "term", "process", twice=False, workers=2, signum=signal.SIGTERM
        ),
    }
    try:
        for command in commands.values():
            command.start()
        for command in commands.values():
            command.interrupt()
    finally:
        for command in commands.values():
            command.kill()
    for name, command in commands.items():
        output = command.log.read_text()
        status = 128 + command.signum  # 130 after SIGINT, 143 after SIGTERM
        assert command.status == status and command.seconds < EXIT_SECONDS, (name, command.status, command.seconds, output)
        assert command.gone, f"{name}: processes left running"
        finished = command.finished
        assert sorted((command.out / "runs").glob("*.json")) == finished and len(finished) == 2, name
        assert all(json.loads(path.read_text())["key"] == path.stem for path in finished), name
        assert all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in finished), name  # the umask, not mkstemp's 0600
        assert not (command.out / "runs" / "failed").exists(), name  # stopped runs are not failures
        line = (f"interrupted: 2 runs kept in {command.out / 'runs'} (2 finished in this session); resume with: "
                f"python -m comparisons run --suite faults --out {command.out} --workers {command.workers}")
        assert line in output.splitlines(), (name, output)
    # the command it prints resumes: only the runs that did not finish are run
    from comparisons import __main__ as cli
    from comparisons import suites

    command = commands["Ctrl-C to the process group"]
    line = next(line for line in command.log.read_text().splitlines() if line.startswith("interrupted: "))
    (command.faults / "slow_2").unlink()
    monkeypatch.setitem(suites.SUITES, "faults", lambda: slow_suite(command.faults))
    executed = executed_runs()
    cli.main(shlex.split(line.split("resume with: python -m comparisons ")[1]))
    assert [spec.seed for spec in executed] == [2, 3, 4, 5]
