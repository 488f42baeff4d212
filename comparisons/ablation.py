"""Ablation of ZONP's late divergence on a chip: learning-rate schedule, step size, damping.

``python -m comparisons.ablation --out results/ablation [--task equalization|copying] [--study levers|compact] [--seeds ...] [--workers 2]``
runs every setting of the task's list (:data:`SETTINGS` on equalization,
:data:`COPYING_SETTINGS` on copying) on the reported seeds of the ``standard`` suite's task
(same budget, Q, Fisher period, pretraining), through the harness's own runs (so the runs
are resumable and measured like the suite's), and writes ``ablation_<task>.md``: per
setting the final training loss (mean +- std and per seed), the runs that diverged late
(final training loss above 1.5 times their best checkpoint), and the Fisher's share of
the queries.  The settings are fixed, not tuned: on equalization they compare the levers at
the step size where the divergence was seen (0.1) and where the suite's tuning landed.
``--study compact`` runs :data:`COMPACT_SETTINGS` instead (``fisher_rank``, float16
factors) and writes ``ablation_<task>_compact.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing as tp
from pathlib import Path

import numpy as np

from .dispatch import Runs, local_executor, stopping_runs
from .execution import RunSpec
from .report import LATE_DIVERGENCE
from .storage import write_atomic
from .suites import LEGACY_STREAM, STUDY_SEEDS, standard_suite


@dataclasses.dataclass(frozen=True)
class Setting:
    """One ablation row: a method, its learning rate and overrides of the task's ZO settings."""

    label: str
    method: str
    lr: float
    overrides: tp.Mapping[str, tp.Any] = dataclasses.field(default_factory=dict)

    @property
    def slug(self) -> str:
        """File-name-safe tag of the overrides (part of the run's task name, hence of its file name)."""
        parts = [f"{key}-{value}" for key, value in sorted(self.overrides.items())]
        return "+".join(parts) or "default"


SETTINGS: tuple[Setting, ...] = (
    Setting("ZONP, lr 0.0173, cosine (default schedule)", "ZONP", 0.0173, {"lr_schedule": "cosine"}),
    Setting("ZONP, lr 0.0173, constant (paper)", "ZONP", 0.0173, {"lr_schedule": "constant"}),
    Setting("ZONP, lr 0.1, cosine", "ZONP", 0.1, {"lr_schedule": "cosine"}),
    Setting("ZONP, lr 0.1, constant (paper)", "ZONP", 0.1, {"lr_schedule": "constant"}),
    Setting("ZONP, lr 0.1, constant, rho 1", "ZONP", 0.1, {"lr_schedule": "constant", "rho": 1.0}),
    Setting("ZONP, lr 0.1, constant, alpha 0.5", "ZONP", 0.1, {"lr_schedule": "constant", "smoothing": 0.5}),
    Setting("ZONP, lr 0.0173, cosine, refresh per_block", "ZONP", 0.0173, {"lr_schedule": "cosine", "fisher_refresh": "per_block"}),
    Setting("ZONP, lr 0.0173, cosine, refresh per_block, fisher_period 200", "ZONP", 0.0173,
            {"lr_schedule": "cosine", "fisher_refresh": "per_block", "fisher_period": 200}),
    Setting("ZOI, lr 0.1, cosine", "ZOI", 0.1, {"lr_schedule": "cosine"}),
    Setting("ZOI, lr 0.1, constant", "ZOI", 0.1, {"lr_schedule": "constant"}),
    Setting("ZOI, lr 0.003, cosine", "ZOI", 0.003, {"lr_schedule": "cosine"}),
)


#: On the copying chip (a 40-step MZI recurrence), where ZONP trailed ZOco, SNES and CMA-ES
#: with the suite's earlier ``least_recent`` refreshes: is it the damping, the refresh rule
#: (the paper's, ``least_recent``, a block's own uses), the Jacobian's step, or the Fisher
#: itself?  At the step size the suite chose for ZONP and ZOI (0.0173).  (An earlier version
#: ran at lr 0.003 on seeds 0-2, on another machine; its runs stay in
#: ``comparisons/reported/ablation/runs``.)
COPYING_SETTINGS: tuple[Setting, ...] = (
    Setting("ZONP, lr 0.0173 (base settings: rho 0.1, least_recent)", "ZONP", 0.0173),
    Setting("ZONP, lr 0.0173, rho 1", "ZONP", 0.0173, {"rho": 1.0}),
    Setting("ZONP, lr 0.0173, refresh sampled (paper)", "ZONP", 0.0173, {"fisher_refresh": "sampled"}),
    Setting("ZONP, lr 0.0173, refresh per_block (first use, then every 300 uses)", "ZONP", 0.0173,
            {"fisher_refresh": "per_block"}),
    Setting("ZONP, lr 0.0173, Jacobian step fd_step 1e-2", "ZONP", 0.0173, {"fd_step": 1e-2}),
    Setting("ZOI, lr 0.0173", "ZOI", 0.0173),
)
SETTINGS_BY_TASK = {"equalization": SETTINGS, "copying": COPYING_SETTINGS}

#: The compact Fisher (``fisher_rank``) and half-precision factors against the full float32
#: factor, at the step size the standard suite chose for ZONP on each chip.  Equalization
#: blocks have 282 parameters and a mini-batch Fisher of rank <= 200 (100 symbols, complex
#: outputs); copying blocks 453, of full rank.
COMPACT_SETTINGS: dict[str, tuple[Setting, ...]] = {
    "equalization": (
        Setting("ZONP, full Fisher (float32 Cholesky factor)", "ZONP", 0.0173),
        Setting("ZONP, fisher_rank 64", "ZONP", 0.0173, {"fisher_rank": 64}),
        Setting("ZONP, fisher_rank 16", "ZONP", 0.0173, {"fisher_rank": 16}),
        Setting("ZONP, full Fisher, float16 factor", "ZONP", 0.0173, {"fisher_storage": "float16"}),
        Setting("ZONP, fisher_rank 64, refresh per_block", "ZONP", 0.0173, {"fisher_rank": 64, "fisher_refresh": "per_block"}),
        # half the block size, the recommendation of docs/guides/settings.md where the full factor does not fit
        Setting("ZONP, fisher_rank 141, refresh per_block", "ZONP", 0.0173, {"fisher_rank": 141, "fisher_refresh": "per_block"}),
    ),
    # The full-Fisher references on copying are the ``levers`` study's rows with the same
    # refresh rule (the first, ``least_recent``; ``per_block``: the standard suite's ZONP row).
    "copying": (
        Setting("ZONP, fisher_rank 64", "ZONP", 0.0173, {"fisher_rank": 64}),
        Setting("ZONP, fisher_rank 64, refresh per_block", "ZONP", 0.0173, {"fisher_rank": 64, "fisher_refresh": "per_block"}),
        Setting("ZONP, fisher_rank 128, refresh per_block", "ZONP", 0.0173, {"fisher_rank": 128, "fisher_refresh": "per_block"}),
        Setting("ZONP, fisher_rank 256, refresh per_block", "ZONP", 0.0173, {"fisher_rank": 256, "fisher_refresh": "per_block"}),
    ),
}
STUDIES = {"levers": SETTINGS_BY_TASK, "compact": COMPACT_SETTINGS}

#: The ZO settings every row starts from (the studies' base: the paper's ``sampled`` refresh
#: on equalization, ``least_recent`` on copying; rows override them), directions from the
#: legacy stream they were drawn with; frozen here so that the studies' stored runs stay theirs.
BASE_SETTINGS: dict[str, dict[str, tp.Any]] = {
    "equalization": {"fisher_period": 160, "fisher_refresh": "sampled", **LEGACY_STREAM},
    "copying": {"fisher_period": 300, "fisher_refresh": "least_recent", **LEGACY_STREAM},
}


def specs(
    task_name: str = "equalization", seeds: tp.Sequence[int] | None = None, study: str = "levers"
) -> list[tuple[Setting, RunSpec]]:
    """Every (setting, run) of ``study`` on the ``standard`` suite's task ``task_name`` (seeds 0-4 by default, the suite's first five).

    The task is the suite's (data, budget, Q, pretraining); its ZO settings are
    :data:`BASE_SETTINGS` with the row's overrides.
    """
    suite = standard_suite()
    task = {task.name: task for task in suite.tasks}[task_name]
    pairs = []
    for setting in STUDIES[study][task_name]:
        variant = dataclasses.replace(
            task, name=f"{task.name}-{setting.slug}", zo_settings={**BASE_SETTINGS[task_name], **setting.overrides}
        )
        for seed in STUDY_SEEDS if seeds is None else seeds:
            spec = RunSpec(variant, setting.method, seed, setting.lr, task.budget or suite.budget, suite.checkpoints, "ablation")
            pairs.append((setting, spec))
    return pairs


def table(pairs: list[tuple[Setting, RunSpec]], records: dict[str, tp.Any]) -> str:
    """Markdown table: one row per setting."""
    lines = [
        "| setting | seeds | final train loss | per seed | best checkpoint (mean) | late divergences | Fisher share |",
        "|---|---|---|---|---|---|---|",
    ]
    settings: list[Setting] = []
    for setting, _ in pairs:
        if not any(setting is seen for seen in settings):
            settings.append(setting)
    for setting in settings:
        runs = [records[spec.key] for s, spec in pairs if s is setting]
        final = np.array([run["row"]["loss"] for run in runs], dtype=float)
        best = np.array([min(point["train_loss"] for point in run["curve"]) for run in runs], dtype=float)
        diverged = int(np.sum(~np.isfinite(final) | (final > LATE_DIVERGENCE * best)))
        queries = sum(run["row"]["queries"] for run in runs)
        fisher = sum(run["row"]["fisher_queries"] for run in runs)
        per_seed = ", ".join(f"{value:.4g}" for value in final)
        lines.append(
            f"| {setting.label} | {len(runs)} | {np.mean(final):.4g} ± {np.std(final, ddof=1):.2g} | {per_seed} "
            f"| {np.mean(best):.4g} | {diverged} of {len(runs)} | {100 * fisher / max(1, queries):.1f} % |"
        )
    return "\n".join(lines)


def main(argv: tp.Sequence[str] | None = None) -> None:
    """Entry point of ``python -m comparisons.ablation``."""
    parser = argparse.ArgumentParser(prog="python -m comparisons.ablation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder of the ablation runs and ablation.md")
    parser.add_argument("--task", default="equalization", choices=sorted(SETTINGS_BY_TASK), help="a task of the standard suite")
    parser.add_argument(
        "--study", default="levers", choices=sorted(STUDIES),
        help="levers: the late-divergence levers (default); compact: fisher_rank and float16 factors against the full Fisher",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the suite's reported seeds)")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = specs(args.task, args.seeds, args.study)
    executor = local_executor(args.workers)
    runs = Runs(out, executor, None, None)
    with stopping_runs(runs, executor):
        records = runs.run([spec for _, spec in pairs])
    executor.shutdown()
    subject = "Ablation" if args.study == "levers" else "Compact and half-precision Fisher"
    text = (
        f"# {subject} on the {args.task} chip (standard suite's budget, Q and Fisher period; reported seeds)\n\n"
        + table(pairs, records)
        + "\n"
    )
    suffix = "" if args.study == "levers" else f"_{args.study}"
    write_atomic(out / f"ablation_{args.task}{suffix}.md", text)
    print(text)


if __name__ == "__main__":
    main()
