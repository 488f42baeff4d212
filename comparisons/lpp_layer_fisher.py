"""How far LPP's layer Fishers are from a multiple of the identity, on a suite's task.

LPP (docs/method.md, "Baselines") draws each layer's part of a direction from
``(1 + rho)(C_u + rho I)^-1`` and rescales it to a root mean square of 1, so a layer whose
Fisher ``F_u`` is a multiple of the identity gets isotropic directions, as ZO-I's.  This
script builds a task of the ``frontier`` suite at one seed, without pretraining (the layer
Fisher of a linear map or a convolution does not depend on its weights; a mesh's depends
on its phases, here the task's initial ones), computes ``F_u`` of every layer on
the ideal model with the paper's ``R_in = R_out = 100``, and prints per layer: its size,
the mean, min and max of the diagonal, the root mean square of the off-diagonal entries,
the relative distance ``||F_u - m I|| / ||m I||`` (``m`` the mean diagonal) and the ratio
of the largest to the smallest eigenvalue of ``(F_u + rho m I)^-1``, the spread of LPP's
directions once ``C_u`` is ``F_u`` (rescaled by ``m``, as the draw's rescaling does).

    python comparisons/lpp_layer_fisher.py --task digits
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from comparisons.suites import SUITES
from nevergrad_zonp import ModelAdapter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits", help="a task of the frontier suite")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--rho", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    spec = next((task for task in SUITES["frontier"]().tasks if task.name == args.task), None)
    if spec is None:
        raise SystemExit(f"the frontier suite has no task {args.task!r}")
    task = spec.build(seed=args.seed, **spec.kwargs)
    on = "chip" if task.chip is not None else "model"
    adapter = ModelAdapter.from_task(task, on=on, batch_size=spec.batch_size, seed=args.seed)
    names = [layer.name for layer in adapter.layered_model().layers]
    print("| layer | parameters | diagonal mean (min, max) | off-diagonal rms | distance from mean x I | eigenvalue ratio of (F + rho m I)^-1 |")
    print("|---|---|---|---|---|---|")
    for index, (start, stop) in enumerate(adapter.layer_spans()):
        fisher = adapter.layer_fisher(adapter.theta0, index)
        diagonal = np.diag(fisher)
        mean = float(diagonal.mean())
        off = fisher - np.diag(diagonal)
        size = stop - start
        distance = np.linalg.norm(fisher - mean * np.eye(size)) / np.linalg.norm(mean * np.eye(size))
        eigenvalues = np.linalg.eigvalsh(fisher / mean + args.rho * np.eye(size))
        print(
            f"| {names[index]} | {size} | {mean:.3g} ({diagonal.min():.3g}, {diagonal.max():.3g}) | "
            f"{np.sqrt(np.mean(off ** 2)):.3g} | {distance:.3f} | {eigenvalues.max() / eigenvalues.min():.3g} |"
        )


if __name__ == "__main__":
    main()
