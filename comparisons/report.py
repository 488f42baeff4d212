"""The report of a suite: per task a markdown table and PNG curves, listed in ``report.md``.

Reads what :func:`comparisons.runner.run_suite` wrote (``results.csv``, ``curves.csv``,
``tuning.json``) and writes next to it:

- ``report.md``: one line per task naming the winner; per task the table of the reported
  seeds (tuning runs left out) with mean +- standard deviation (``ddof=1``) over seeds of
  the final test metric, the final training loss (full training split), the queries spent
  (with the Fisher's share), the two-sided Mann-Whitney U p-value
  (``scipy.stats.mannwhitneyu``) of ZONP against each baseline on the test metric and on
  the training loss, and a stability count: runs that *diverged late*, whose final training
  loss is above :data:`LATE_DIVERGENCE` times the best of their checkpoints; the
  sub-optimizer a method such as NGOpt chose in its runs (:func:`sub_optimizer_line`); then
  the step size grids, per-seed tuning losses and choices (a choice left at a grid edge is
  marked), and the plots.  A method without a step size (NGOpt) has ``none (not tuned)``
  in its step column and, instead of a tuning row, the line of its ``tuning.json`` entry
  (e.g. "NGOpt: no step size, Nevergrad's defaults (nevergrad 1.0.12), not tuned");
- ``<task>_curves.png``: training loss (log scale) and test metric against queries, sample forwards
  and wall time, the mean over seeds with a band of +- one standard deviation.  Every run
  has the same number of checkpoints, so seeds are averaged checkpoint by checkpoint
  (x and y alike).  Figures are drawn with matplotlib's object API (``Figure``, rendered
  by the Agg canvas), so no pyplot state or display is involved.

What cannot be read is said, never skipped in silence: a missing or unparseable
``results.csv``, ``curves.csv`` or ``tuning.json``, or one without the columns the report
needs, raises :class:`ReportError` naming the file and the problem.  Rows that a file cut
short or damaged left incomplete (a last line without its newline, a row with fewer fields
than the header) are left out with a :class:`ReportWarning` and a line at the top of
``report.md``, as are runs that failed (``runs/failed/``) and a folder with no reported run.
"""

from __future__ import annotations

import io
import json
import math
import os
import typing as tp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu

from .storage import CURVES_FILE, FAILED_DIR, RESULTS_FILE, RUNS_DIR, SETTINGS_FILE, TUNING_FILE, incomplete_rows

REPORT_FILE = "report.md"
#: A run diverged late when its final training loss exceeds this multiple of its best checkpoint.
LATE_DIVERGENCE = 1.5
REFERENCE = "ZONP"
_AXES = (("queries", "queries"), ("sample_forwards", "sample forwards"), ("elapsed_time", "wall time [s]"))
#: Columns the report reads (besides each task's ``test_<metric>``).
RESULTS_COLUMNS = (
    "task", "phase", "optimizer_name", "metric", "loss", "seed", "step_name", "step_size", "queries", "fisher_queries",
    "budget", "dimension", "trained_on", "pretrain_epochs", "num_directions", "batch_size", "elapsed_time",
)
CURVES_COLUMNS = ("task", "phase", "optimizer_name", "seed", "checkpoint", "train_loss", *(x for x, _ in _AXES))


class ReportError(ValueError):
    """The stored results cannot be reported: a file is missing, unreadable or lacks what the report needs."""


class ReportWarning(UserWarning):
    """Something the report leaves out (incomplete rows, failed runs), also said at the top of ``report.md``."""


def mean_std(values: tp.Sequence[float]) -> str:
    """``mean ± std`` over seeds with 4 significant digits (std with ``ddof=1``; 0 for one value)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return f"{array.mean():.4g} ± {std:.2g}"


def mann_whitney(reference: tp.Sequence[float], other: tp.Sequence[float]) -> float:
    """Two-sided Mann-Whitney U p-value; NaN when a sample is empty."""
    if len(reference) == 0 or len(other) == 0:
        return math.nan
    return float(mannwhitneyu(reference, other, alternative="two-sided").pvalue)


def _format_p(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"


def late_divergences(final: pd.DataFrame, curves: pd.DataFrame) -> dict[str, int]:
    """Per method, reported runs whose final training loss is above ``LATE_DIVERGENCE`` x their best checkpoint."""
    best = curves.groupby(["optimizer_name", "seed"]).train_loss.min()
    counts: dict[str, int] = {}
    for _, run in final.iterrows():
        floor = best.get((run.optimizer_name, run.seed), math.inf)
        diverged = not math.isfinite(run.loss) or run.loss > LATE_DIVERGENCE * floor
        counts[run.optimizer_name] = counts.get(run.optimizer_name, 0) + int(diverged)
    return counts


def task_table(final: pd.DataFrame, metric: str, curves: pd.DataFrame) -> str:
    """Markdown table of one task's reported runs (one row per method)."""
    column = f"test_{metric}"
    reference = final[final.optimizer_name == REFERENCE]
    diverged = late_divergences(final, curves)
    lines = [
        f"| method | step size | seeds | test {metric} | train loss | queries (Fisher share) | late divergences "
        f"| p {metric} vs {REFERENCE} | p loss vs {REFERENCE} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in final.groupby("optimizer_name", sort=False):
        if name == REFERENCE or reference.empty:
            p_metric = p_loss = "—"
        else:
            p_metric = _format_p(mann_whitney(reference[column], runs[column]))
            p_loss = _format_p(mann_whitney(reference["loss"], runs["loss"]))
        step = _step_cell(runs)
        share = runs.fisher_queries.sum() / max(1, runs.queries.sum())
        queries = f"{runs.queries.mean():.0f} ({100 * share:.1f} %)"
        lines.append(
            f"| {name} | {step} | {len(runs)} | {mean_std(runs[column])} | {mean_std(runs['loss'])} | {queries} "
            f"| {diverged.get(name, 0)} of {len(runs)} | {p_metric} | {p_loss} |"
        )
    return "\n".join(lines)


def _step_cell(runs: pd.DataFrame) -> str:
    """``lr = 0.01``, or ``none (not tuned)`` for a method without a step size (its step columns are empty)."""
    name, size = runs.step_name.iloc[0], runs.step_size.iloc[0]
    if pd.isna(name) or pd.isna(size):
        return "none (not tuned)"
    return f"{name} = {size:g}"


def sub_optimizer_line(final: pd.DataFrame) -> str:
    """Which sub-optimizer each method that picks one (NGOpt) chose in the reported runs of a task ("" if none)."""
    if "sub_optimizer" not in final:
        return ""
    parts = []
    for name, runs in final[final.sub_optimizer.notna()].groupby("optimizer_name", sort=False):
        choices = runs.groupby("sub_optimizer", sort=False).seed.apply(list)
        if len(choices) == 1:
            parts.append(f"{name} chose {choices.index[0]} in all {len(runs)} reported run(s)")
        else:
            listed = ", ".join(f"{choice} (seeds {_seed_range(seeds)})" for choice, seeds in choices.items())
            parts.append(f"{name} chose {listed}")
    return "; ".join(parts) + "." if parts else ""


def winner_line(task: str, final: pd.DataFrame, metric: str, maximize: bool) -> str:
    """One line: the method with the lowest mean final training loss and the best mean test metric, with p-values."""
    means = final.groupby("optimizer_name").loss.mean().sort_values()
    column = f"test_{metric}"
    by_metric = final.groupby("optimizer_name")[column].mean().sort_values(ascending=not maximize)
    parts = []
    for label, order, values in (("training loss", means, "loss"), (f"test {metric}", by_metric, column)):
        best = order.index[0]
        if len(order) > 1:
            second = order.index[1]
            p = mann_whitney(final[final.optimizer_name == best][values], final[final.optimizer_name == second][values])
            parts.append(f"{best} on {label} (next: {second}, p = {_format_p(p)})")
        else:
            parts.append(f"{best} on {label}")
    return f"- **{task}**: " + "; ".join(parts)


#: The regime in which ZONP uses its Fisher: every block estimated, refreshes at most this share of queries.
FISHER_SHARE_LIMIT = 0.15


def fisher_line(final: pd.DataFrame) -> str:
    """How much of its Fisher ZONP could use on this task, said plainly when it could not."""
    runs = final[final.optimizer_name == REFERENCE]
    if runs.empty or "blocks_with_fisher" not in runs:
        return ""
    blocks, covered = int(runs.blocks.iloc[0]), float(runs.blocks_with_fisher.mean())
    share = runs.fisher_queries.sum() / max(1, runs.queries.sum())
    low, high = (f"{100 * value:.1f}" for value in (runs.fisher_queries / runs.queries.clip(lower=1)).agg(["min", "max"]))
    line = (
        f"ZONP's Fisher: {covered:.3g} of {blocks} blocks estimated (mean over seeds), {100 * share:.1f} % of the queries "
        + (f"({low} % in every run)." if low == high else f"({low}-{high} % per run).")
    )
    reasons = []
    if covered < blocks:
        reasons.append("some blocks never got a Fisher, so on them ZONP ran as block ZO-I")
    if share > FISHER_SHARE_LIMIT:  # the share over the runs; the line gives each run's too
        reasons.append(f"the refreshes took more than {100 * FISHER_SHARE_LIMIT:.0f} % of the queries")
    if reasons:
        line += (
            " This is not the regime ZO-NP is made for (every block estimated, refreshes at most "
            f"{100 * FISHER_SHARE_LIMIT:.0f} % of the queries): " + " and ".join(reasons) + "; the budget is "
            "too small for this block size and Q (or the task's fisher_period too short)."
        )
    return line


def run_time_line(runs: pd.DataFrame) -> str:
    """Runs of a task (tuning and reported) and their summed run time (one core each; pretraining excluded)."""
    tuning = int((runs.phase == "tuning").sum())
    hours = float(runs.elapsed_time.sum()) / 3600
    median = float(runs.elapsed_time.median())
    return (
        f"Runs: {len(runs)} ({tuning} tuning, {len(runs) - tuning} reported); summed run time {hours:.2f} h "
        f"(median {median:.0f} s a run, one core each, the ZO loop only)."
    )


def _fixed(entry: dict[str, tp.Any]) -> bool:
    """Whether a ``tuning.json`` entry is a step size fixed by the suite (not tuned here, but a step size)."""
    return "grid" not in entry and entry.get("tuned") is not False


def tuning_table(tuning: dict[str, tp.Any]) -> str:
    """Markdown table of one task's step-size grids, median tuning losses and choices."""
    lines = [
        "| method | step | grid | median final training loss over the tuning seeds | chosen |",
        "|---|---|---|---|---|",
    ]
    fixed, untuned = [], []
    for name, entry in tuning.items():
        if entry.get("tuned") is False:  # a method without a step size
            untuned.append(f"{entry['note']}.")
            continue
        if "grid" not in entry:  # a step size chosen elsewhere, not tuned here
            fixed.append(f"{name} ({entry['step_name']} = {entry['chosen']:g})")
            continue
        grid = ", ".join(f"{step:g}" for step in entry["grid"])
        scores = ", ".join(f"{score:.4g}" for score in entry["scores"])
        mark = " (at the grid's edge)" if entry["at_edge"] else ""
        extended = f"; grid extended {entry['extensions']}x" if entry["extensions"] else ""
        if entry.get("failed"):
            extended += f"; {len(entry['failed'])} failed tuning run(s) counted as infinite loss"
        lines.append(f"| {name} | {entry['step_name']} | {grid} | {scores} | {entry['chosen']:g}{mark}{extended} |")
    texts = []
    if fixed:
        rules = sorted({entry["rule"] for entry in tuning.values() if _fixed(entry)})
        texts.append(f"Not tuned here: {', '.join(fixed)}; " + " ".join(rules))
    texts += untuned
    if not texts:
        return "\n".join(lines)
    return "\n\n".join(texts if len(lines) == 2 else ["\n".join(lines), *texts])


def plot_curves(curves: pd.DataFrame, metric: str, path: Path, title: str) -> None:
    """PNG of training loss and test metric against queries, sample forwards and wall time."""
    column = f"test_{metric}"
    figure = Figure(figsize=(5 * len(_AXES), 8))
    axes = figure.subplots(2, len(_AXES), squeeze=False)
    for name, runs in curves.groupby("optimizer_name", sort=False):
        by_checkpoint = runs.groupby("checkpoint")
        mean, std = by_checkpoint.mean(numeric_only=True), by_checkpoint.std(ddof=1, numeric_only=True).fillna(0.0)
        for row, quantity in enumerate(("train_loss", column)):
            for col, (x, label) in enumerate(_AXES):
                axis = axes[row][col]
                (line,) = axis.plot(mean[x], mean[quantity], label=name)
                axis.fill_between(
                    mean[x], mean[quantity] - std[quantity], mean[quantity] + std[quantity], color=line.get_color(), alpha=0.2
                )
                axis.set_xlabel(label)
                axis.set_ylabel("training loss (full split)" if quantity == "train_loss" else f"test {metric}")
                if quantity == "train_loss":
                    axis.set_yscale("log")
    axes[0][0].legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _seed_range(seeds: tp.Sequence[int]) -> str:
    """``0-4`` for consecutive seeds, else the list."""
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}-{ordered[-1]}"
    return ", ".join(str(seed) for seed in ordered)


def _maximize(runs: pd.DataFrame) -> bool:
    """Whether the task's metric is better when larger (stored per run; accuracy-like by default)."""
    return bool(runs["maximize"].iloc[0]) if "maximize" in runs else True


def _read_table(path: Path, required: tp.Iterable[str], notes: list[str]) -> pd.DataFrame:
    """The CSV table at ``path`` without its incomplete rows, each left out with a line in ``notes``.

    Incomplete rows: :func:`~comparisons.storage.incomplete_rows`.  Raises :class:`ReportError`
    when the file is missing, cannot be parsed or lacks one of the ``required`` columns.
    """
    try:
        text = path.read_text(encoding="utf-8")
        table = pd.read_csv(io.StringIO(text))
    except FileNotFoundError as error:
        raise ReportError(f"{path} is missing") from error
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ReportError(f"{path} cannot be read: {error}") from error
    missing = [column for column in required if column not in table.columns]
    if missing:
        raise ReportError(f"{path} has no column {', '.join(missing)} (cut short, or not written by the harness)")
    incomplete = incomplete_rows(text)
    if not incomplete:
        return table
    lines = [line for row in incomplete for line in row]
    notes.append(
        f"{path.name}: {len(incomplete)} incomplete row(s) left out (line {', '.join(map(str, lines))}): the file "
        "was cut short or damaged; run the suite again to rewrite it from the run files"
    )
    return pd.read_csv(io.StringIO(text), skiprows=[line - 1 for line in lines])


def _read_tuning(path: Path) -> dict[str, dict[str, dict[str, tp.Any]]]:
    """``tuning.json``: task -> method -> entry; :class:`ReportError` when it is missing or not of that form."""
    try:
        tuning = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ReportError(f"{path} is missing") from error
    except (ValueError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} cannot be read: {error}") from error
    if not isinstance(tuning, dict) or not all(
        isinstance(entries, dict) and all(isinstance(entry, dict) and "chosen" in entry for entry in entries.values())
        for entries in tuning.values()
    ):
        raise ReportError(f"{path} is not a mapping task -> method -> entry with a chosen step size")
    return tuning


def _read_settings(path: Path) -> dict[str, tp.Any]:
    """``settings.json`` (``{}`` where there is none); :class:`ReportError` when it cannot be read."""
    if not path.exists():
        return {}
    try:
        settings = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ReportError(f"{path} cannot be read: {error}") from error
    if not isinstance(settings, dict):
        raise ReportError(f"{path} is not a mapping of the suite's settings")
    return settings


def _failed_runs(root: Path) -> list[str]:
    """Keys of the runs whose failure is recorded under ``runs/failed/`` (and not redone since)."""
    return sorted(path.stem for path in (root / RUNS_DIR / FAILED_DIR).glob("*.txt"))


def write_report(folder: str | os.PathLike[str]) -> Path:
    """Writes ``report.md`` and the PNGs from the results in ``folder``; returns the report's path.

    Raises :class:`ReportError` when the results cannot be read; issues a
    :class:`ReportWarning` (and a line in the report) for each thing left out.
    """
    root = Path(folder)
    notes: list[str] = []
    results = _read_table(root / RESULTS_FILE, RESULTS_COLUMNS, notes)
    curves = _read_table(root / CURVES_FILE, CURVES_COLUMNS, notes)
    tuning = _read_tuning(root / TUNING_FILE)
    groups = _read_settings(root / SETTINGS_FILE).get("seed_groups", {})
    final, final_curves = results[results.phase == "final"], curves[curves.phase == "final"]
    for task, runs in results.groupby("task", sort=False):
        column = f"test_{runs.metric.iloc[0]}"
        for path, table in ((root / RESULTS_FILE, results), (root / CURVES_FILE, curves)):
            if column not in table.columns:
                raise ReportError(f"{path} has no column {column} (the metric of task {task!r})")
    failed = _failed_runs(root)
    if failed:
        notes.append(
            f"{len(failed)} failed run(s), not in the tables (tracebacks in {RUNS_DIR}/{FAILED_DIR}/; running the "
            f"suite again retries them): {', '.join(failed)}"
        )
    if final.empty:
        notes.append(f"{RESULTS_FILE} has no reported run (phase final) yet: there is no table to show")
    steps_tables = {}
    for task in final.task.unique():
        if task not in tuning:
            raise ReportError(f"{root / TUNING_FILE} has no entry for task {task!r}, which {RESULTS_FILE} reports")
        try:
            steps_tables[task] = tuning_table(tuning[task])
        except (KeyError, TypeError, ValueError) as error:
            raise ReportError(f"{root / TUNING_FILE}: the entries of task {task!r} are incomplete ({error!r})") from error
    for note in notes:
        warnings.warn(note, ReportWarning, stacklevel=2)
    entries = [entry for task in tuning.values() for entry in task.values()]
    steps = []
    if any("grid" in entry for entry in entries):
        steps.append(
            "Step sizes tuned on separate seeds (lowest median final training loss over a log-spaced grid of the "
            "same size for every method, extended where the best point was at an edge)."
        )
    steps += sorted({f"Step sizes not tuned here: {entry['rule']}" for entry in entries if _fixed(entry)})
    untuned = sorted({entry["note"] for entry in entries if entry.get("tuned") is False})
    if untuned:
        steps.append(
            "Methods without a step size make no tuning run and run on the reported seeds as they are: "
            + "; ".join(untuned) + "."
        )
    sections = ["# Comparison report", ""]
    if notes:
        sections += ["Left out of this report:", "", *(f"- {note}" for note in notes), ""]
    sections += [
        "Mean ± standard deviation over seeds of the reported runs; `train loss` is the final loss of the "
        "recommendation on the full training split; p-values: two-sided Mann-Whitney U of ZONP against each "
        f"method; a late divergence is a run whose final training loss is above {LATE_DIVERGENCE:g} times its best "
        "checkpoint. " + " ".join(steps),
        "",
        "Winners (lowest mean; p: Mann-Whitney U against the runner-up):",
        "",
    ]
    for task, runs in final.groupby("task", sort=False):
        sections.append(winner_line(str(task), runs, str(runs.metric.iloc[0]), _maximize(runs)))
    for task, runs in final.groupby("task", sort=False):
        metric = str(runs.metric.iloc[0])
        first = runs.iloc[0]
        image = f"{task}_curves.png"
        budget, dimension, trained_on = int(first.budget), int(first.dimension), first.trained_on
        title = f"{task}: {dimension} parameters on the {trained_on}, budget {budget} queries"
        plot_curves(final_curves[final_curves.task == task], metric, root / image, title)
        sections += [
            "",
            f"## {task}",
            "",
            f"{dimension} parameters trained on the {trained_on} (backprop pretraining epochs: {int(first.pretrain_epochs)}), "
            f"budget {budget} queries, Q = {int(first.num_directions)}, mini-batch {int(first.batch_size)}.",
            "",
            task_table(runs, metric, final_curves[final_curves.task == task]),
            "",
        ]
        for label, seeds in groups.items():
            subset = runs[runs.seed.isin(seeds)]
            if subset.empty:
                continue
            group_curves = final_curves[(final_curves.task == task) & final_curves.seed.isin(seeds)]
            sections += [f"Seeds {_seed_range(seeds)} alone ({label}):", "", task_table(subset, metric, group_curves), ""]
        choices = sub_optimizer_line(runs)
        sections += [
            fisher_line(runs),
            "",
            *([choices, ""] if choices else []),
            run_time_line(results[results.task == task]),
            "",
            "Step-size tuning:",
            "",
            steps_tables[task],
            "",
            f"![{task} curves]({image})",
        ]
    path = root / REPORT_FILE
    path.write_text("\n".join(sections) + "\n")
    return path
