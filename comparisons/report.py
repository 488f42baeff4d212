"""The report of a suite: per task a markdown table and PNG curves, listed in ``report.md``.

Reads what :func:`comparisons.runner.run_suite` wrote (``results.csv``, ``curves.csv``,
``tuning.json``) and writes next to it:

- ``report.md``: per task the table of the reported seeds (tuning runs left out) with
  mean +- standard deviation (``ddof=1``) over seeds of the final test metric, the final
  training loss (full training split) and the queries spent (Fisher queries included),
  and the two-sided Mann-Whitney U p-value (``scipy.stats.mannwhitneyu``) of ZONP
  against each baseline, on the test metric and on the training loss; then the tuned step
  sizes and the plots;
- ``<task>_curves.png``: training loss (log scale) and test metric against queries, sample forwards
  and wall time, the mean over seeds with a band of +- one standard deviation.  Every run
  has the same number of checkpoints, so seeds are averaged checkpoint by checkpoint
  (x and y alike).  Figures are drawn with matplotlib's object API (``Figure``, rendered
  by the Agg canvas), so no pyplot state or display is involved.
"""

from __future__ import annotations

import json
import math
import os
import typing as tp
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu

from .runner import CURVES_FILE, RESULTS_FILE, TUNING_FILE

REPORT_FILE = "report.md"
REFERENCE = "ZONP"
_AXES = (("queries", "queries"), ("sample_forwards", "sample forwards"), ("elapsed_time", "wall time [s]"))


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


def task_table(final: pd.DataFrame, metric: str) -> str:
    """Markdown table of one task's reported runs (one row per method)."""
    column = f"test_{metric}"
    reference = final[final.optimizer_name == REFERENCE]
    lines = [
        f"| method | step size | seeds | test {metric} | train loss | queries (Fisher) | p {metric} vs {REFERENCE} | p loss vs {REFERENCE} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in final.groupby("optimizer_name", sort=False):
        if name == REFERENCE or reference.empty:
            p_metric = p_loss = "—"
        else:
            p_metric = _format_p(mann_whitney(reference[column], runs[column]))
            p_loss = _format_p(mann_whitney(reference["loss"], runs["loss"]))
        step = f"{runs.step_name.iloc[0]} = {runs.step_size.iloc[0]:g}"
        queries = f"{runs.queries.mean():.0f} ({runs.fisher_queries.mean():.0f})"
        lines.append(
            f"| {name} | {step} | {len(runs)} | {mean_std(runs[column])} | {mean_std(runs['loss'])} | {queries} | {p_metric} | {p_loss} |"
        )
    return "\n".join(lines)


def tuning_table(tuning: dict[str, tp.Any]) -> str:
    """Markdown table of one task's step-size grids, tuning losses and choices."""
    lines = ["| method | step | grid | final training loss on the tuning seed | chosen |", "|---|---|---|---|---|"]
    for name, entry in tuning.items():
        grid = ", ".join(f"{step:g}" for step in entry["grid"])
        losses = ", ".join(f"{loss:.4g}" for loss in entry["losses"])
        lines.append(f"| {name} | {entry['step_name']} | {grid} | {losses} | {entry['chosen']:g} |")
    return "\n".join(lines)


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


def write_report(folder: str | os.PathLike[str]) -> Path:
    """Writes ``report.md`` and the PNGs from the results in ``folder``; returns the report's path."""
    root = Path(folder)
    results = pd.read_csv(root / RESULTS_FILE)
    curves = pd.read_csv(root / CURVES_FILE)
    tuning = json.loads((root / TUNING_FILE).read_text())
    final, final_curves = results[results.phase == "final"], curves[curves.phase == "final"]
    sections = [
        "# Comparison report",
        "",
        "Mean ± standard deviation over seeds of the reported runs; `train loss` is the final loss of the "
        "recommendation on the full training split; p-values: two-sided Mann-Whitney U of ZONP against each "
        "method. Step sizes tuned on a separate seed (lowest final training loss over a log-spaced grid of the "
        "same size for every method).",
    ]
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
            task_table(runs, metric),
            "",
            "Step-size tuning:",
            "",
            tuning_table(tuning[task]),
            "",
            f"![{task} curves]({image})",
        ]
    path = root / REPORT_FILE
    path.write_text("\n".join(sections) + "\n")
    return path
