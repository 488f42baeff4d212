"""A results folder on disk: run files, whether a stored run is reusable, atomic writes, merges.

Layout of a folder (names: the constants below): ``settings.json`` (the suite),
``tuning.json``, ``results.csv``, ``curves.csv``, ``runs/<key>.json`` (one record per run,
see :mod:`comparisons.execution`), ``runs/failed/<key>.txt`` (the traceback of a run that
raised), ``runs/corrupt/`` (stored run files that could not be read, moved aside),
``pretrained/`` (backprop-pretrained models, reused by the runs of a seed) and ``.lock``.

- Resume: a stored run is reused when :func:`same_run` says it is a run of the spec (same
  key, task settings, method fingerprint, direction stream and effective optimizer
  settings, defaults included); :func:`load_run` reads a run file or raises ``ValueError``
  saying what is wrong with it.
- Writes: :func:`write_atomic` never leaves a partial file, and every file gets the mode
  ``open()`` would give it (``0o666`` less the umask).
- Merges: a suite may be run in parts into one folder (the command line's ``--tasks`` and
  ``--methods``), one after the other or at the same time: :func:`merged_settings`,
  :func:`merged_tuning` and :func:`merged_table` keep the entries of the tasks and methods
  a part did not cover, and replace those it did.  Each read-merge-write holds the folder's
  lock (:func:`merge_lock`, a :class:`filelock.FileLock` on ``.lock``), so two processes
  merging into one folder keep both's entries.  A stored file that cannot be parsed stops
  the merge with a ``ValueError`` naming it; table rows a cut file left incomplete
  (:func:`incomplete_rows`) are left out with a ``RuntimeWarning`` naming their lines.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import tempfile
import typing as tp
import warnings
from pathlib import Path

import filelock
import pandas as pd

from .execution import Record, RunSpec
from .methods import METHODS

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

#: The direction stream of a stored run that records none: such runs drew their directions
#: with numpy's legacy generator.
UNRECORDED_DIRECTION_STREAM = "legacy"


def _run_identity(task_settings: tp.Mapping[str, tp.Any]) -> dict[str, tp.Any]:
    """The task settings a run depends on besides its optimizer's.

    Left out: which methods a task runs, and ``zo_settings``: they configure the optimizer
    only, and :func:`same_run` compares the optimizer's effective settings (defaults
    included) and the direction stream the run recorded instead.
    """
    identity = dict(task_settings)
    identity.pop("methods", None)
    identity.pop("zo_settings", None)
    return identity


def same_run(record: Record, spec: RunSpec) -> bool:
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


def merge_lock(folder: Path) -> filelock.FileLock:
    """The lock every read-merge-write of the shared files of ``folder`` holds (``.lock``, an ``flock``)."""
    return filelock.FileLock(folder / LOCK_FILE)


#: Keys of a stored run record and the type of their value.
_RECORD_FIELDS = {"key": str, "row": dict, "curve": list, "settings": dict}


def load_run(path: Path) -> Record:
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


def set_aside(path: Path, folder: Path) -> Path:
    """Moves ``path`` into ``folder`` under its own name (a numbered one if taken); returns where it went."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / path.name
    number = 0
    while target.exists():
        number += 1
        target = folder / f"{path.stem}.{number}{path.suffix}"
    os.replace(path, target)
    return target


def merged_settings(path: Path, settings: dict[str, tp.Any]) -> dict[str, tp.Any]:
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


def merged_tuning(path: Path, tuning: dict[str, dict[str, tp.Any]]) -> dict[str, dict[str, tp.Any]]:
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


def merged_table(path: Path, table: pd.DataFrame, covered: set[tuple[str, str]]) -> pd.DataFrame:
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
