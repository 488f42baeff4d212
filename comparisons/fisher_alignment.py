"""Where do natural perturbations point?  A diagnostic of ZO-NP's premise on the suites' chips.

A ZO step with directions ``u`` (normalised to ``|u|^2 = n_b``) and ``lam = 1 / n_b`` has
expected first-order descent ``E[g . g_hat] = E[(g . u)^2] / n_b`` and a second-order
cost that grows with how much a direction moves the network's outputs, ``u^T F u`` (for
these losses the Fisher is the Gauss-Newton curvature).  Per block, relative to isotropic
directions (for which both are 1):

- descent gain ``G = E[(g . u)^2] / |g|^2``: how much of the exact block gradient ``g``
  the directions capture;
- disturbance ``D = E[u^T F u] / E_iso[u^T F u]``: how much they move the outputs;
- efficiency ``G / D``: descent per unit of output disturbance, what natural
  perturbations are meant to raise.

The gradient lies in the row space of the output Jacobian, as the Fisher does, and
``N(0, (F~ + rho I)^-1)`` puts most of its mass where ``F`` is small, so ``G`` and ``D``
are both far below 1 for ZO-NP; whether ``G / D`` is above 1 is the question.

For each task and seed the script builds the run's starting point exactly as the harness
does (task, pretraining, chip), estimates every block's Fisher with ZO-NP's own black-box
estimator (same ``fd_step``, damping and mini-batch), takes the exact mini-batch gradient
by autograd on the simulated chip, and estimates the three numbers per block from
``--samples`` draws; with ``--after N`` it repeats this after ``N`` queries of ZO-I
training from that start (a point further along a run).  Run:
``python -m comparisons.fisher_alignment --tasks equalization copying --seeds 0 1 2``.
"""

from __future__ import annotations

import argparse
import typing as tp
import warnings

import numpy as np
import torch


def _start(task_name: str, seed: int) -> tp.Tuple[tp.Any, tp.Any, tp.Any]:
    from nevergrad_zonp import ModelAdapter
    from nevergrad_zonp.tasks.base import pretrain

    from .suites import standard_suite

    spec = {task.name: task for task in standard_suite().tasks}[task_name]
    torch.manual_seed(seed)
    task = spec.build(seed=seed, **spec.kwargs)
    if spec.pretrain_epochs:
        pretrain(task, epochs=spec.pretrain_epochs, lr=spec.pretrain_lr, batch_size=spec.batch_size, seed=seed)  # programs the chip
    adapter = ModelAdapter.from_task(task, on="chip" if task.chip is not None else "model", batch_size=spec.batch_size, seed=seed)
    return spec, task, adapter


def _gradient(adapter: tp.Any, loss: tp.Callable[..., torch.Tensor], theta: np.ndarray, key: int) -> np.ndarray:
    """Exact mini-batch gradient (autograd on the simulated network) in the adapter's parameter order."""
    adapter.load(theta)
    model = adapter.model
    named = dict(model.named_parameters())
    model.zero_grad()
    inputs, targets = adapter.batches.batch(key)
    with torch.enable_grad():
        loss(model(inputs), targets).backward()
    return np.concatenate([named[name].grad.detach().reshape(-1).double().numpy() for name in adapter.names])


def alignment(spec: tp.Any, task: tp.Any, adapter: tp.Any, theta: np.ndarray, samples: int, seed: int, key: int) -> tp.List[tp.Tuple[float, float]]:
    """``(G, D)`` of every block at ``theta`` (block Fisher and gradient on mini-batch ``key``)."""
    from nevergrad_zonp import ZerothOrder

    settings = {k: v for k, v in spec.zo_settings.items() if k in ("rho", "fd_step", "smoothing", "max_block_size")}
    optimizer = ZerothOrder(sampler="natural", num_directions=spec.num_directions, **settings)(
        parametrization=adapter.parametrization, budget=None
    )
    optimizer.attach(adapter)
    optimizer._x = theta - adapter.theta0  # standardized data of theta
    gradient = _gradient(adapter, task.loss, theta, key)
    bounds = optimizer.block_bounds
    rng = np.random.RandomState(seed)
    sampler = optimizer.sampler
    result = []
    for block in range(len(bounds) - 1):
        start, stop = int(bounds[block]), int(bounds[block + 1])
        if not optimizer.refresh_fisher(block, key):
            result.append((float("nan"), float("nan")))
            continue
        size = stop - start
        factor = sampler.factors[block].astype(np.float64)  # L L^T = F~ + rho I (trace-normalised F~)
        draws = {}
        for name, raw in (("natural", sampler.sample(rng, block, size, samples)), ("isotropic", rng.normal(size=(samples, size)))):
            draws[name] = raw * (np.sqrt(size) / np.linalg.norm(raw, axis=1, keepdims=True))
        g = gradient[start:stop]

        def gain(u: np.ndarray) -> float:
            return float(np.mean((u @ g) ** 2) / (g @ g))

        def disturbance(u: np.ndarray) -> float:
            return float(np.mean(np.sum((u @ factor) ** 2, axis=1) - sampler.damping * size))

        result.append((gain(draws["natural"]) / gain(draws["isotropic"]), disturbance(draws["natural"]) / disturbance(draws["isotropic"])))
    return result


def main(argv: tp.Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["equalization", "copying"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=2000, help="directions drawn per block")
    parser.add_argument("--after", type=int, default=0, help="also measure after this many ZO-I queries from the start")
    parser.add_argument("--lr", type=float, default=3e-3, help="ZO-I learning rate for --after")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    from nevergrad_zonp import ZerothOrder, minimize_vectorized

    print("| task | point | seed | per block: G / D | mean G | mean D | mean G / D |")
    print("|---|---|---|---|---|---|---|")
    summary: tp.Dict[tp.Tuple[str, str], tp.List[tp.Tuple[float, float, float]]] = {}
    for task_name in args.tasks:
        for seed in args.seeds:
            spec, task, adapter = _start(task_name, seed)
            points = [("start", adapter.theta0.copy())]
            if args.after:
                zoi = ZerothOrder(sampler="isotropic", num_directions=spec.num_directions, lr=args.lr)(
                    parametrization=adapter.parametrization, budget=args.after
                )
                zoi.parametrization.random_state.seed(seed)
                points.append((f"after {args.after} ZO-I queries", np.asarray(minimize_vectorized(zoi, adapter).value)))
            for label, theta in points:
                blocks = alignment(spec, task, adapter, theta, args.samples, seed, key=10_000 + seed)
                gains = np.array([b[0] for b in blocks])
                disturbances = np.array([b[1] for b in blocks])
                ratios = gains / disturbances
                row = (float(np.nanmean(gains)), float(np.nanmean(disturbances)), float(np.nanmean(ratios)))
                summary.setdefault((task_name, label), []).append(row)
                per_block = ", ".join(f"{g:.3g}/{d:.3g}" for g, d in blocks)
                print(f"| {task_name} | {label} | {seed} | {per_block} | {row[0]:.3g} | {row[1]:.3g} | {row[2]:.3g} |", flush=True)
    print()
    print("| task | point | seeds | mean G | mean D | mean G / D (min - max over seeds) |")
    print("|---|---|---|---|---|---|")
    for (task_name, label), rows in summary.items():
        g, d, r = (np.array(column) for column in zip(*rows))
        print(f"| {task_name} | {label} | {len(rows)} | {g.mean():.3g} | {d.mean():.3g} | {r.mean():.3g} ({r.min():.3g} - {r.max():.3g}) |")


if __name__ == "__main__":
    main()
