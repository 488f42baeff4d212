"""The attack suite: ZO-L2L against ZO-SGD, ZO-signSGD, ZO-Adam (ZOI) and ZO-NP on black-box attacks.

The seed benchmark of ZO-L2L (Ruan et al., ICLR 2020; docs/method.md, "The learned optimizer (ZO-L2L)") on the
package's digits classifier (:mod:`nevergrad_zonp.tasks.attack`): per-image attacks,
``Q = 20`` directions, 200 iterations of ``Q + 1`` queries (4,200 queries, ZO-NP's Fisher
queries included in its budget), one block of all 784 pixels for every method.

- **Tuning** (the rule of the other suites): each method's step size (``lr``, or
  ``update_scale`` for the learned optimizers) on a log grid, scored by the median final
  attack loss over the tuning attacks (training images, never the test images); a grid is
  extended past an edge while the choice sits on it (at most ``--max-extensions`` times),
  and the report marks a choice left at an edge.
- **Reported attacks**: one attack per held-out test image (100 by default), every method
  on the same images and starting points.  Per method: final loss (mean, median, spread),
  success rate, distortion (L1, L2) of the successful attacks, loss against queries; the
  test of "ZOL2L lower than X" is a one-sided Wilcoxon signed-rank test over the paired
  attacks (same image, same start), beside the two-sided one.
- **Estimator quality**: along ZOL2L-attack's trajectories on the test images, every 10th
  iteration, two estimates at the same point with the same number of queries, one with the
  QueryRNN's directions and one isotropic, are compared with the exact gradient (cosine,
  and relative squared error); measurement queries, not counted; tested per image.
- The ZO baselines run with the package's defaults for a model-aware objective (cosine
  step-size decay over the budget), not the paper's constant rates.

``python -m comparisons.attack --out results/attack --workers 2`` (resumes from the run
files in ``--out``); the report is ``<out>/report.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import json
import math
import time
import typing as tp
from pathlib import Path

import numpy as np
import torch

from .methods import METHODS
from .storage import UNRECORDED_DIRECTION_STREAM, write_atomic
from .suites import LEGACY_STREAM
from .tuning import choose_step, extend_grid, step_score

DEFAULT_METHODS = ("ZOL2L-attack", "ZOL2LNoQuery-attack", "ZOL2L", "ZOSGD", "ZOSignSGD", "ZOI", "ZONP")
#: The method the others are tested against: the learned optimizer meta-trained on attacks.
REFERENCE = "ZOL2L-attack"
#: Initial step-size grids (the paper's values, 4/d and 8/d, in the middle where known).
GRIDS: dict[str, list[float]] = {
    "ZOSGD": [0.0016, 0.0051, 0.016],
    "ZOSignSGD": [0.0032, 0.01, 0.032],
    "ZOI": [0.0032, 0.01, 0.032],
    "ZONP": [0.0032, 0.01, 0.032],
    "ZOL2L-attack": [0.3, 1.0, 3.0],
    "ZOL2LNoQuery-attack": [0.3, 1.0, 3.0],
    "ZOL2L": [0.01, 0.1, 1.0],  # generic weights: updates at the scale of Nevergrad's standardized space
}
NUM_DIRECTIONS = 20
ITERATIONS = 200
#: One block of all pixels; directions from numpy's legacy stream, which the reported attacks
#: (comparisons/reported/attack) were drawn with (a folder made before the setting existed
#: is read as legacy, see ``_check_settings``).
ZO_SETTINGS = {"max_block_size": 784, **LEGACY_STREAM}
CURVE_EVERY = 5  # iterations between curve points


@functools.lru_cache(maxsize=2)
def _problems(seed: int, n_train: int, n_test: int) -> tp.Any:
    from nevergrad_zonp.tasks.attack import attack_problems

    return attack_problems(seed=seed, n_train=n_train, n_test=n_test)


def run_attack(
    method: str, step: float, split: str, image: int, *, seed: int = 0, n_train: int = 100, n_test: int = 100,
    iterations: int = ITERATIONS, num_directions: int = NUM_DIRECTIONS,
) -> dict[str, tp.Any]:
    """One attack of image ``image`` of ``split`` by ``method`` at ``step``; the record with its curve."""
    import nevergrad_zonp

    torch.set_num_threads(1)
    problem = _problems(seed, n_train, n_test).split(split)[image]
    adapter = problem.adapter(seed=seed)
    budget = iterations * (num_directions + 1)
    configured = METHODS[method].build(num_directions, step, problem.dimension, ZO_SETTINGS)
    optimizer = configured(parametrization=adapter.parametrization, budget=budget)
    optimizer.parametrization.random_state.seed(seed * 100_003 + image)
    curve: list[tuple[int, float]] = [(0, float(problem.report(adapter.theta0)["loss"]))]
    counter = {"iterations": 0}

    def record(opt: tp.Any, _candidates: tp.Any, _losses: tp.Any) -> None:
        counter["iterations"] += 1
        if counter["iterations"] % CURVE_EVERY == 0:
            curve.append((adapter.queries, problem.report(opt.provide_recommendation().value)["loss"]))

    started = time.perf_counter()
    recommendation = nevergrad_zonp.minimize_vectorized(optimizer, adapter, callback=record)
    seconds = time.perf_counter() - started
    result = problem.report(recommendation.value)
    curve.append((adapter.queries, result["loss"]))
    return {
        "method": method, "step": step, "split": split, "image": image, "seed": seed, "queries": adapter.queries,
        "fisher_queries": int(getattr(optimizer, "num_fisher_queries", 0)), "seconds": seconds,
        **{key: result[key] for key in ("loss", "margin", "success", "l1", "l2")}, "curve": curve,
    }


def estimator_quality(
    split: str, image: int, *, seed: int = 0, n_train: int = 100, n_test: int = 100, iterations: int = ITERATIONS,
    num_directions: int = NUM_DIRECTIONS, every: int = 10,
) -> list[dict[str, float]]:
    """Along a ZOL2L attack: cosine to the exact gradient of QueryRNN and isotropic estimates at the same points."""
    import nevergrad_zonp
    from nevergrad_zonp.learned import LearnedZO

    torch.set_num_threads(1)
    problem = _problems(seed, n_train, n_test).split(split)[image]
    adapter = problem.adapter(seed=seed)
    optimizer = LearnedZO(weights="attack_digits", num_directions=num_directions, max_block_size=ZO_SETTINGS["max_block_size"])(
        parametrization=adapter.parametrization, budget=iterations * (num_directions + 1)
    )
    optimizer.parametrization.random_state.seed(seed * 100_003 + image)
    rng = np.random.default_rng([seed, image, 7])
    rows: list[dict[str, float]] = []
    state = {"iterations": 0}

    def measure(opt: tp.Any, request: tp.Any, _losses: tp.Any) -> None:
        state["iterations"] += 1
        if state["iterations"] % every:
            return
        theta = opt._origin + opt._x  # the iterate after this step, where the next estimate is formed
        exact = problem.gradient(theta)
        std = opt.sampler.query_std(0)
        step = opt._parts.mu / math.sqrt(problem.dimension)
        base_loss = float(problem.losses(torch.from_numpy(theta)[None]).detach()[0])
        row = {"image": image, "iteration": state["iterations"]}
        for name, scale in (("query", std), ("isotropic", np.ones_like(std))):
            directions = rng.standard_normal((num_directions, problem.dimension)) * scale
            moved = torch.from_numpy(theta[None] + step * directions)
            losses = problem.losses(moved).detach().numpy()
            estimate = ((losses - base_loss) / step) @ directions / num_directions
            cosine = float(estimate @ exact / (np.linalg.norm(estimate) * np.linalg.norm(exact) + 1e-300))
            error = float(np.sum((estimate - exact) ** 2) / (exact @ exact + 1e-300))  # at the estimate's own scale
            row[f"cosine_{name}"], row[f"relative_error_{name}"] = cosine, error
        rows.append(row)

    nevergrad_zonp.minimize_vectorized(optimizer, adapter, callback=measure)
    return rows


def _key(method: str, step: float, split: str, image: int) -> str:
    return f"{method}_{step:.3g}_{split}{image}"


def _identity() -> dict[str, tp.Any]:
    """What else the runs of a folder depend on: Q, the ZO settings and the learned weights (by hash)."""
    import hashlib

    from nevergrad_zonp.learned import SHIPPED_WEIGHTS

    weights = {name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for name, path in SHIPPED_WEIGHTS.items()}
    return {"num_directions": NUM_DIRECTIONS, "zo_settings": ZO_SETTINGS, "weights": weights}


def _check_settings(out: Path, common: dict[str, tp.Any]) -> None:
    """Refuses to resume a folder whose runs were made with other settings (seed, iterations, images, Q, weights)."""
    path = out / "runs" / "settings.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        stored.setdefault("zo_settings", {}).setdefault("direction_stream", UNRECORDED_DIRECTION_STREAM)
        if stored != common:
            raise SystemExit(f"{out} holds runs made with {stored}, not {common}: use another --out")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(common))


class _Store:
    """One JSON file per attack in ``<out>/runs``; existing files are reused (resume)."""

    def __init__(self, out: Path, workers: int, common: dict[str, tp.Any]) -> None:
        self.folder = out / "runs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.workers, self.common = workers, common

    def run(self, jobs: list[tuple[str, float, str, int]], label: str) -> list[dict[str, tp.Any]]:
        from tqdm import tqdm

        results: dict[str, dict[str, tp.Any]] = {}
        todo = []
        for job in jobs:
            path = self.folder / f"{_key(*job)}.json"
            if path.is_file():
                results[_key(*job)] = json.loads(path.read_text())
            else:
                todo.append(job)
        with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=label, unit="attack") as bar:
            if self.workers > 1 and todo:
                with concurrent.futures.ProcessPoolExecutor(self.workers) as pool:
                    futures = {pool.submit(run_attack, *job, **self.common): job for job in todo}
                    for future in concurrent.futures.as_completed(futures):
                        self._keep(futures[future], future.result(), results)
                        bar.update(1)
            else:
                for job in todo:
                    self._keep(job, run_attack(*job, **self.common), results)
                    bar.update(1)
        return [results[_key(*job)] for job in jobs]

    def _keep(self, job: tuple[str, float, str, int], record: dict[str, tp.Any], results: dict[str, tp.Any]) -> None:
        write_atomic(self.folder / f"{_key(*job)}.json", json.dumps(record))
        results[_key(*job)] = record


def tune(store: _Store, method: str, tuning_images: int, max_extensions: int) -> dict[str, tp.Any]:
    """The step size of ``method``: lowest median final loss over the tuning attacks, grid extended past edges."""
    grid = list(GRIDS[method])
    scores: dict[float, float] = {}
    extensions = 0
    while True:
        for step in grid:
            if step not in scores:
                records = store.run([(method, step, "train", i) for i in range(tuning_images)], f"tune {method} {step:g}")
                scores[step] = step_score([r["loss"] for r in records])
        ordered = sorted(scores)
        chosen = choose_step(ordered, [scores[s] for s in ordered])
        beyond = extend_grid(ordered, chosen)
        if beyond is None or extensions >= max_extensions:
            break
        if beyond in scores:
            break
        grid.append(beyond)
        extensions += 1
    ordered = sorted(scores)
    return {
        "grid": ordered, "scores": [scores[s] for s in ordered], "chosen": chosen,
        "at_edge": chosen in (ordered[0], ordered[-1]), "extensions": extensions,
    }


def _wilcoxon(reference: np.ndarray, other: np.ndarray, alternative: str) -> float:
    from scipy.stats import wilcoxon

    if np.array_equal(reference, other):
        return 1.0
    return float(wilcoxon(reference, other, alternative=alternative).pvalue)


def write_report(out: Path, tuning: dict[str, tp.Any], records: dict[str, list[dict[str, tp.Any]]],
                 quality: list[dict[str, float]], settings: dict[str, tp.Any]) -> Path:
    """``report.md``, ``results.csv`` and ``attack_curves.png`` of an attack suite."""
    import pandas as pd

    rows = [{k: v for k, v in r.items() if k != "curve"} for runs in records.values() for r in runs]
    pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
    reference = REFERENCE if REFERENCE in records else next(iter(records))
    ref_loss = np.array([r["loss"] for r in records[reference]])
    lines = [
        "# Attack suite",
        "",
        f"Per-image black-box attacks on the digits classifier (test accuracy {settings['classifier_accuracy']:.3f}); "
        f"{settings['images']} held-out test images, one attack each, every method on the same images and starts; "
        f"Q = {settings['num_directions']}, {settings['budget']} queries per attack (Fisher queries included), "
        "one block of 784 pixels. Loss = max(log p_y - max_j log p_j, -kappa) + c ||delta||_1 "
        f"(c = {settings['c']}, kappa = {settings['kappa']}). The ZO baselines run with the package's defaults for "
        "a model-aware objective (Adam 0.9/0.999, directions normalised to norm sqrt(n), a cosine decay of the "
        "step size over the budget), not the paper's constant rates; the learned optimizers have no schedule. "
        f"Step sizes tuned on {settings['tuning_images']} "
        "training images (lowest median final loss; `*` = left at a grid edge). p: Wilcoxon signed-rank over "
        f"the paired attacks, {reference} against the method (one-sided: {reference} lower; two-sided beside it).",
        "",
        "| method | step size | final loss mean ± std | median | success rate | L1 (successful) | L2 (successful) | "
        f"{reference} lower: p (one-sided) | p (two-sided) | seconds per attack |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in records.items():
        loss = np.array([r["loss"] for r in runs])
        success = np.array([r["success"] for r in runs], dtype=bool)
        l1 = np.array([r["l1"] for r in runs])[success]
        l2 = np.array([r["l2"] for r in runs])[success]
        tuned = tuning[method]
        name = METHODS[method].step_name
        step = f"{name} = {tuned['chosen']:g}{'*' if tuned['at_edge'] else ''}"
        one = "—" if method == reference else f"{_wilcoxon(ref_loss, loss, 'less'):.3g}"
        two = "—" if method == reference else f"{_wilcoxon(ref_loss, loss, 'two-sided'):.3g}"
        lines.append(
            f"| {method} | {step} | {loss.mean():.4g} ± {loss.std(ddof=1):.2g} | {np.median(loss):.4g} | "
            f"{success.mean():.2f} | {l1.mean() if len(l1) else float('nan'):.3g} | {l2.mean() if len(l2) else float('nan'):.3g} | "
            f"{one} | {two} | {np.mean([r['seconds'] for r in runs]):.2f} |"
        )
    lines += ["", "## Tuning", "", "| method | grid | median final loss per grid point | chosen |", "|---|---|---|---|"]
    for method, tuned in tuning.items():
        lines.append(
            f"| {method} | {', '.join(f'{g:g}' for g in tuned['grid'])} | "
            f"{', '.join(f'{s:.4g}' for s in tuned['scores'])} | {tuned['chosen']:g}{' (edge)' if tuned['at_edge'] else ''} |"
        )
    if quality:
        frame = pd.DataFrame(quality)
        lines += [
            "", "## Does the QueryRNN improve the gradient estimate?", "",
            "Along ZOL2L-attack's attacks of the test images, at regular iterations: two estimates at the same "
            f"point with Q = {settings['num_directions']} each, QueryRNN directions against isotropic ones, compared "
            "with the exact gradient (autograd). Relative error: ||g_est - g||^2 / ||g||^2 (variance and bias of "
            "the estimate as used). p: Wilcoxon signed-rank over the attacked images, each image's points averaged "
            "(points of one trajectory are not independent).",
            "", "| estimate | cosine to the exact gradient (mean ± std) | relative error (mean) |", "|---|---|---|",
        ]
        for name in ("query", "isotropic"):
            lines.append(f"| {name} | {frame[f'cosine_{name}'].mean():.4f} ± {frame[f'cosine_{name}'].std():.3f} | "
                         f"{frame[f'relative_error_{name}'].mean():.4f} |")
        per_image = frame.groupby("image").mean()
        p_cos = _wilcoxon(per_image["cosine_query"].to_numpy(), per_image["cosine_isotropic"].to_numpy(), "two-sided")
        p_err = _wilcoxon(per_image["relative_error_query"].to_numpy(), per_image["relative_error_isotropic"].to_numpy(),
                          "two-sided")
        lines += ["", f"{len(frame)} points on {len(per_image)} images; QueryRNN against isotropic, per image: "
                      f"cosine p = {p_cos:.3g}, relative error p = {p_err:.3g} (two-sided)."]
        frame.to_csv(out / "estimator_quality.csv", index=False)
    _plot(out / "attack_curves.png", records)
    lines += ["", "Loss against queries (mean over the test attacks, band: 25-75 % quantiles): `attack_curves.png`."]
    path = out / "report.md"
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _plot(path: Path, records: dict[str, list[dict[str, tp.Any]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for method, runs in records.items():
        length = min(len(r["curve"]) for r in runs)
        queries = np.array([q for q, _ in runs[0]["curve"][:length]])
        losses = np.array([[loss for _, loss in r["curve"][:length]] for r in runs])
        (line,) = ax.plot(queries, losses.mean(axis=0), label=method)
        low, high = np.quantile(losses, [0.25, 0.75], axis=0)
        ax.fill_between(queries, low, high, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("queries")
    ax.set_ylabel("attack loss")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m comparisons.attack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=sorted(GRIDS))
    parser.add_argument("--images", type=int, default=100, help="held-out test attacks")
    parser.add_argument("--tuning-images", type=int, default=10, help="training-image attacks per grid point")
    parser.add_argument("--max-extensions", type=int, default=3)
    parser.add_argument("--quality-images", type=int, default=20, help="test attacks of the estimator-quality study")
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="ZO iterations per attack (budget / (Q + 1))")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.iterations < 2 or args.images < 2 or args.tuning_images < 1:
        parser.error("--iterations and --images must be at least 2, --tuning-images at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = {"seed": args.seed, "n_train": max(100, args.tuning_images), "n_test": max(100, args.images),
              "iterations": args.iterations}
    _check_settings(out, {**common, **_identity()})
    store = _Store(out, args.workers, common)
    started = time.perf_counter()
    tuning = {method: tune(store, method, args.tuning_images, args.max_extensions) for method in args.methods}
    write_atomic(out / "tuning.json", json.dumps(tuning, indent=1))
    records = {
        method: store.run([(method, tuning[method]["chosen"], "test", i) for i in range(args.images)], f"test {method}")
        for method in args.methods
    }
    quality: list[dict[str, float]] = []
    if REFERENCE in args.methods and args.quality_images:
        quality_file = out / f"estimator_quality_{args.quality_images}.json"
        if quality_file.is_file():
            quality = json.loads(quality_file.read_text())
        else:
            for image in range(args.quality_images):
                quality += estimator_quality("test", image, every=max(1, min(10, args.iterations // 4)), **common)
            write_atomic(quality_file, json.dumps(quality))
    problems = _problems(args.seed, common["n_train"], common["n_test"])
    settings = {
        "classifier_accuracy": problems.classifier_accuracy, "images": args.images, "tuning_images": args.tuning_images,
        "num_directions": NUM_DIRECTIONS, "budget": args.iterations * (NUM_DIRECTIONS + 1), "c": problems.c,
        "kappa": problems.kappa, "seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(out / "settings.json", json.dumps(settings, indent=1))
    print(f"report: {write_report(out, tuning, records, quality, settings)}")


if __name__ == "__main__":
    main()
