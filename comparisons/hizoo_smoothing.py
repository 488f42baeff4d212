"""HiZOO's curvature under several smoothings: loss and the spread of ``D`` after a short run on the copying chip.

HiZOO's curvature update is multiplicative (docs/method.md, "Baselines"), so its smoothing
``alpha`` decides whether ``D`` stays near 1 or grows geometrically.  This script pretrains
the copying chip of the ``standard`` suite (delay 20, 15 epochs, as the suite does; or
loads the suite's stored pretrained model with ``--pretrained``), runs
:class:`~nevergrad_zonp.optimizers.hessian.HessianInformed` for ``--budget`` queries at each
smoothing and prints the full-training-split loss of the recommendation and the
min / median / max of ``D``.

    python comparisons/hizoo_smoothing.py --pretrained comparisons/reported/frontier/pretrained
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

from nevergrad_zonp import ModelAdapter, minimize_vectorized
from nevergrad_zonp.optimizers.hessian import HessianInformed
from nevergrad_zonp.photonics.chip import transfer_parameters
from nevergrad_zonp.tasks.base import pretrain
from nevergrad_zonp.tasks.copying import copying_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--smoothings", type=float, nargs="+", default=[1e-2, 1e-4, 1e-6])
    parser.add_argument("--pretrained", type=Path, default=None, help="a folder of the harness's pretrained models")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    task = copying_task(seed=args.seed, delay=20)
    stored = sorted(args.pretrained.glob(f"copying_seed{args.seed}_*.pt")) if args.pretrained else []
    if stored:
        task.model.load_state_dict(torch.load(stored[0]))
        transfer_parameters(task.model, task.chip)
    else:
        pretrain(task, epochs=15, lr=2e-3, batch_size=100, seed=args.seed)
    print(f"copying chip, seed {args.seed}, {args.budget} queries, lr {args.lr}")
    print("| hessian_smoothing | training loss | D: min / median / max |")
    print("|---|---|---|")
    for alpha in args.smoothings:
        adapter = ModelAdapter.from_task(task, on="chip", batch_size=100, seed=args.seed)
        optimizer = HessianInformed(lr=args.lr, hessian_smoothing=alpha, direction_stream="legacy")(
            adapter.parametrization, budget=args.budget
        )
        optimizer.parametrization.random_state = np.random.RandomState(args.seed)
        recommendation = minimize_vectorized(optimizer, adapter)
        loss = adapter.evaluate(recommendation.value, data=task.train)["loss"]
        low, median, high = np.quantile(optimizer.sampler.curvature, [0.0, 0.5, 1.0])
        print(f"| {alpha:g} | {loss:.4f} | {low:.3g} / {median:.3g} / {high:.3g} |")


if __name__ == "__main__":
    main()
