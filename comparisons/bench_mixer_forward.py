"""Seconds per query of the CIFAR-10 MLP-Mixers: V settings in one vmapped call vs one at a time.

A ZO iteration with Q perturbations queries V = Q + 1 parameter settings on one mini-batch
(docs/method.md, "The zeroth-order estimate").  The model adapter evaluates them in a single call,
``torch.vmap(functional_call, in_dims=(0, None))``; this script times that call against a
Python loop over the settings, on synthetic CIFAR-shaped images
(:func:`nevergrad_zonp.tasks.cifar.synthetic_cifar10`), without gradients.

Usage: ``python comparisons/bench_mixer_forward.py [--queries 16] [--batch 100]
[--large-settings 5] [--repeats 3] [--threads 2] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import time
import typing as tp

import torch
from torch.func import functional_call

from nevergrad_zonp.tasks.cifar import mixer, synthetic_cifar10


def best_time(fn: tp.Callable[[], torch.Tensor], repeats: int, device: torch.device) -> float:
    """Shortest wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def bench(size: str, settings: int, batch: int, repeats: int, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = mixer(size).to(device)
    params = {
        name: p.detach() + 1e-3 * torch.randn(settings, *p.shape, device=device)
        for name, p in model.named_parameters()
    }
    (images, _), _ = synthetic_cifar10(n_train=batch, n_test=0)
    images = images.to(device)
    batched = torch.vmap(lambda theta, x: functional_call(model, theta, (x,)), in_dims=(0, None))

    def one_at_a_time() -> torch.Tensor:
        return torch.stack(
            [functional_call(model, {k: v[i] for k, v in params.items()}, (images,)) for i in range(settings)]
        )

    with torch.no_grad():
        error = float((batched(params, images) - one_at_a_time()).abs().max())
        vmapped = best_time(lambda: batched(params, images), repeats, device)
        looped = best_time(one_at_a_time, repeats, device)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vmapped": vmapped / settings,
        "looped": looped / settings,
        "speedup": looped / vmapped,
        "max_abs_diff": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=16, help="Q; the small Mixer is timed at V = Q + 1 settings")
    parser.add_argument("--large-settings", type=int, default=5, help="V for the 1.7M-parameter Mixer (0: skip it)")
    parser.add_argument("--batch", type=int, default=100, help="images per mini-batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (the best one is reported)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'model':<8}{'N':>11}{'V':>4}{'vmapped s/query':>17}{'looped s/query':>16}{'speed-up':>10}{'max |diff|':>12}")
    runs = [("small", args.queries + 1)] + ([("large", args.large_settings)] if args.large_settings > 0 else [])
    for size, settings in runs:
        r = bench(size, settings, args.batch, args.repeats, device)
        print(
            f"{size:<8}{r['parameters']:>11,}{settings:>4}{r['vmapped']:>17.5f}{r['looped']:>16.5f}"
            f"{r['speedup']:>9.2f}x{r['max_abs_diff']:>12.1e}"
        )


if __name__ == "__main__":
    main()
