"""Command line of ZO-L2L: meta-train the RNNs and write a weights file, or compare two files.

``python -m nevergrad_zonp.learned train --family attack --out weights.npz --plot meta_loss.png``
meta-trains with the paper's settings (docs/method.md, "The learned optimizer (ZO-L2L)") and writes
the weights, the
meta-loss curve (PNG) and, in the file's metadata, the command, the configuration, the
seconds it took and the per-epoch history.  ``compare A B`` prints the largest difference
between two weights files (the shipped weights are regenerated to float tolerance on one
CPU with one torch thread, the default here).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import typing as tp
from pathlib import Path

import torch

from .families import FAMILIES, GENERIC_QUADRATIC
from .meta import MetaConfig, meta_train, plot_history
from .rnn import load_weights, save_weights


def _family(args: argparse.Namespace) -> tp.Callable:
    if args.family == "quadratic":
        return FAMILIES["quadratic"](**{**GENERIC_QUADRATIC, "dimension": args.dimension})
    if args.family == "equalization":
        return FAMILIES["equalization"]()
    return FAMILIES["attack"](seed=args.task_seed)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    config = MetaConfig(
        epochs_update=args.epochs_update,
        epochs_query=args.epochs_query,
        optimizees_per_epoch=args.optimizees,
        steps=args.steps,
        truncation=args.truncation,
        lr_update=args.lr_update,
        lr_query=args.lr_query,
        num_directions=args.directions,
        mu=args.mu,
        meta_loss=args.meta_loss,
        meta_gradient=args.meta_gradient,
        seed=args.seed,
        validation_optimizees=args.validation,
        input_scale=args.input_scale,
    )
    result = meta_train(_family(args), config, progress=not args.no_progress)
    metadata = {
        "command": "python -m nevergrad_zonp.learned " + " ".join(args.argv),
        "family": args.family,
        "task_seed": args.task_seed,
        "config": dataclasses.asdict(config),
        "seconds": round(result.seconds, 1),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "history": result.history,
    }
    path = save_weights(args.out, result.update, result.query, metadata)
    print(f"wrote {path} ({result.seconds:.0f} s)")
    if args.plot:
        plot_history(result.history, args.plot)
        print(f"wrote {args.plot}")


def compare(args: argparse.Namespace) -> None:
    first_update, first_query, _ = load_weights(args.first)
    second_update, second_query, _ = load_weights(args.second)
    differences = []
    for a, b in ((first_update, second_update), (first_query, second_query)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            if x.shape != y.shape:
                raise SystemExit(f"{name}: shapes differ, {tuple(x.shape)} and {tuple(y.shape)}")
            differences.append(float((x - y).abs().max()) if x.numel() else 0.0)
    # (max() would drop a NaN: it is the answer if there is one)
    largest = math.nan if any(math.isnan(d) for d in differences) else max(differences, default=0.0)
    print(f"largest weight difference: {largest:.3g}")
    if not largest <= args.tolerance:  # a NaN difference fails too
        raise SystemExit(1)


def main(argv: tp.Optional[tp.Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nevergrad_zonp.learned", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    trainer = commands.add_parser("train", help="meta-train the UpdateRNN then the QueryRNN and write a weights file")
    trainer.add_argument("--family", choices=sorted(FAMILIES), default="attack", help="family of optimizees")
    trainer.add_argument("--task-seed", type=int, default=0, help="seed of the attack family's classifier and images")
    trainer.add_argument("--dimension", type=int, default=10, help="dimension of the quadratic family")
    trainer.add_argument("--out", required=True, help="weights file to write (.npz)")
    trainer.add_argument("--plot", help="PNG of the meta-loss curve")
    defaults = MetaConfig()
    trainer.add_argument("--seed", type=int, default=defaults.seed)
    trainer.add_argument("--epochs-update", type=int, default=defaults.epochs_update)
    trainer.add_argument("--epochs-query", type=int, default=defaults.epochs_query)
    trainer.add_argument("--optimizees", type=int, default=defaults.optimizees_per_epoch, help="unrolls per epoch")
    trainer.add_argument("--steps", type=int, default=defaults.steps, help="ZO iterations per unroll")
    trainer.add_argument("--truncation", type=int, default=defaults.truncation, help="steps per truncated BPTT window")
    trainer.add_argument("--lr-update", type=float, default=defaults.lr_update)
    trainer.add_argument("--lr-query", type=float, default=defaults.lr_query)
    trainer.add_argument("--directions", type=int, default=defaults.num_directions, help="Q")
    trainer.add_argument("--mu", type=float, default=defaults.mu, help="finite-difference displacement norm")
    trainer.add_argument("--meta-loss", choices=("decrease", "sum"), default=defaults.meta_loss)
    trainer.add_argument("--meta-gradient", choices=("autograd", "zo"), default=defaults.meta_gradient)
    trainer.add_argument("--validation", type=int, default=defaults.validation_optimizees,
                         help="optimizees of the fixed validation draw that picks each stage's best epoch (0: last epoch)")
    trainer.add_argument("--input-scale", type=float, default=defaults.input_scale,
                         help="fixed factor on the RNNs' inputs (stored with the weights)")
    trainer.add_argument("--threads", type=int, default=1, help="torch threads (1: reproducible numbers)")
    trainer.add_argument("--no-progress", action="store_true")
    trainer.set_defaults(run=train)
    comparer = commands.add_parser("compare", help="largest difference between two weights files")
    comparer.add_argument("first")
    comparer.add_argument("second")
    comparer.add_argument("--tolerance", type=float, default=1e-8)
    comparer.set_defaults(run=compare)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the metadata records as the command
    if args.command == "train":
        for name in ("dimension", "threads"):
            if getattr(args, name) < 1:
                parser.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
        for option, path in (("--out", args.out), ("--plot", args.plot)):  # checked now, not after a long training
            if path is None:
                continue
            if Path(path).is_dir():
                parser.error(f"{option} {path} is a directory; give a file name")
            if not Path(path).resolve().parent.is_dir():
                parser.error(f"{option} {path}: folder {Path(path).resolve().parent} does not exist")
    elif not args.tolerance >= 0:
        parser.error(f"--tolerance must be a non-negative number, got {args.tolerance}")
    args.run(args)


if __name__ == "__main__":
    main()
