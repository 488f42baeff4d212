"""Optimizer + framework overhead per ZO iteration against the batched forward, on both paths.

For each workload a ZO optimizer runs ``--iterations`` iterations through
:func:`nevergrad_zonp.minimize_vectorized`, once on the per-candidate path (one Nevergrad
candidate per query: ``ask``/``tell``, the adapter's ``loss_batch``) and once on the
iteration-level fast path (``ask_iteration``/``tell_iteration``, the adapter's
``block_losses``).  The time spent inside the adapter's forward call (the vmapped
``functional_call`` on the mini-batch, Fisher Jacobian forwards included) is measured
separately; everything else in the loop is *overhead*: Nevergrad, the optimizer (sampling,
estimate, Adam, Fisher factorisation), parameter assembly and the loss.

Workloads: digits CNN (2,654 parameters, batch 50) at Q = 10 and 100, the equalization
chip (564 parameters, Q = 10), the 33,642-parameter CIFAR Mixer (synthetic CIFAR-shaped
data, batch 100) at Q = 100.  One torch thread and one BLAS thread (as the harness runs);
the timed window is one Fisher period (ZONP refreshes once in it, as often as in a run),
and ZONP starts it with a Fisher factor on every block, as a run past its first periods
has (each draw then solves with one; ``--first-period`` times a fresh start instead, where
no block has a factor and ZONP looked cheaper than it runs).
The allocator keeps freed memory as in the harness (:func:`nevergrad_zonp.reuse_freed_memory`;
``--system-allocator`` leaves glibc's defaults, with slower forwards).
``--waiting-forward MS`` replaces the forward, after the untimed first iteration, by one
that returns the outputs of that iteration's size once computed and waits ``MS``
milliseconds without using the CPU: a stand-in for a forward on a GPU or a chip, where the
host's cores are free during the wait.  ``--busy-forward MS``
replaces it by a busy-wait of ``MS`` milliseconds instead (a Python loop on the clock):
``--busy-forward 0`` times the loop's own work back to back, and a busy-wait as long as the
real forward shows how much of the overhead comes from the time spent away from it rather
than from what the forward does to the caches (on this project's KVM machine, most of the
difference between the two).  ``--device cuda``
puts the network on a GPU (the data stay on the CPU and are moved in the forward, the
losses are formed on the CPU), ``--settings-per-call V`` sets the settings per vmapped
call.  The *loss* column is the part of the overhead spent forming the mini-batch losses
from the outputs (the task's loss function, the objective's own work rather than the
framework's): it is reported so that both readings of "everything but the forward" can be
read off.  Run:
``python comparisons/bench_overhead.py [--repeats 3] [--workloads ...] [--methods ...] [--paths ...] [--waiting-forward MS | --busy-forward MS] [--device DEV] [--settings-per-call V] [--first-period]``;
writes a markdown table to stdout (and ``--out FILE`` as JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import typing as tp
import warnings

WORKLOADS = ("digits-q10", "digits-q100", "equalization-q10", "mixer33k-q100")


def _adapter(workload: str, device: str = "cpu", settings_per_call: int | None = None) -> tp.Tuple[tp.Any, int, int]:
    from nevergrad_zonp import ModelAdapter
    from nevergrad_zonp.tasks.cifar import mixer_task, synthetic_cifar10
    from nevergrad_zonp.tasks.equalization import equalization_task
    from nevergrad_zonp.tasks.images import digits_task

    if workload.startswith("digits"):
        task, batch, on = digits_task(seed=0), 50, "model"
    elif workload.startswith("equalization"):
        task, batch, on = equalization_task(seed=0, n_train=2000, n_test=200), 100, "chip"
    elif workload.startswith("mixer33k"):
        train, test = synthetic_cifar10(n_train=500, n_test=10, seed=0)
        task, batch, on = mixer_task(train, test, size="small", seed=0), 100, "model"
    else:
        raise ValueError(f"unknown workload {workload!r}; known: {WORKLOADS}")
    q = int(workload.rsplit("-q", 1)[1])
    period = 160 if workload.startswith("equalization") else 100  # the suites' fisher_period
    (task.model if on == "model" else task.chip).to(device)  # the data stay on the CPU: moved per query, in the forward
    adapter = ModelAdapter.from_task(task, on=on, batch_size=batch, seed=0)
    if settings_per_call is not None:
        adapter.settings_per_call = settings_per_call
    return adapter, q, period


class _Timer:
    """Wraps the adapter method ``name`` (``_call``: the forward; ``_losses``: the losses from the outputs) and sums its wall time."""

    def __init__(self, adapter: tp.Any, name: str) -> None:
        self.seconds = 0.0
        original = getattr(adapter, name)

        def timed(*args: tp.Any, **kwargs: tp.Any) -> tp.Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - began

        setattr(adapter, name, timed)


def _stand_in_for_forward(adapter: tp.Any, seconds: float, busy: bool) -> None:
    """Replaces the adapter's forward by a stand-in that takes ``seconds`` without computing: the outputs of a size, once
    computed, are returned again.  ``busy``: a busy-wait on the CPU (a Python loop on the clock, a few hundred bytes of
    code and data); else a sleep that leaves the CPU free."""
    original, outputs = adapter._call, {}

    def stand_in(params: tp.Any, in_dims: tp.Any, count: int, inputs: tp.Any) -> tp.Any:
        if count not in outputs:
            outputs[count] = original(params, in_dims, count, inputs)
        if busy:
            began = time.perf_counter()
            while time.perf_counter() - began < seconds:
                pass
        else:
            time.sleep(seconds)
        return outputs[count]

    adapter._call = stand_in


#: Above this many blocks the steady state's factors are copies of one real estimate (see below).
REAL_ESTIMATES_UP_TO = 8


def _factor_on_every_block(optimizer: tp.Any) -> None:
    """Gives every block of a ZONP optimizer a Fisher factor, untimed: the state of a run past its first periods.

    A run past its first few hundred iterations has a factor on every block, and each of its
    draws solves with one (``O(Q n_b^2)``); in the first Fisher period of a fresh start every
    draw is isotropic (no factor yet), which would hide that cost.  Up to
    :data:`REAL_ESTIMATES_UP_TO` blocks each is estimated for real (block-output queries on
    mini-batch 0); beyond (the 66 blocks of the 33,642-parameter Mixer, 2-3 s each) the
    largest block's estimate, cut to each block's size, is given to the others: a draw's cost
    depends on the factor's size, not on its values.
    """
    import numpy as np

    bounds = optimizer.block_bounds
    largest = int(np.argmax(np.diff(bounds)))
    blocks = range(optimizer.num_blocks) if optimizer.num_blocks <= REAL_ESTIMATES_UP_TO else [largest]
    for block in blocks:
        optimizer.refresh_fisher(block, 0)
    sampler = optimizer.sampler
    if len(blocks) < optimizer.num_blocks:
        factor = sampler.factors[largest].astype(np.float64)  # L L^T = F~ + rho I, the normalised estimate plus damping
        estimate = factor @ factor.T - sampler.damping * np.eye(len(factor))
        for block in range(optimizer.num_blocks):
            size = int(bounds[block + 1] - bounds[block])
            if not sampler.update(block, estimate[:size, :size]):
                raise RuntimeError(f"the copied Fisher estimate was refused for block {block}")
    if optimizer.num_blocks_with_fisher != optimizer.num_blocks:
        raise RuntimeError(f"{optimizer.num_blocks_with_fisher} of {optimizer.num_blocks} blocks have a Fisher factor")


def measure(
    workload: str, sampler: str, fast: bool, iterations: int | None, waiting_ms: float | None = None,
    device: str = "cpu", settings_per_call: int | None = None, busy_ms: float | None = None, steady_state: bool = True,
) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with threadpool_limits(limits=1):  # one BLAS thread, as the harness runs
        return _measure(
            workload, sampler, fast, iterations, waiting_ms, device, settings_per_call, busy_ms, steady_state
        )


def _measure(
    workload: str, sampler: str, fast: bool, iterations: int | None, waiting_ms: float | None,
    device: str, settings_per_call: int | None, busy_ms: float | None, steady_state: bool,
) -> dict:
    import numpy as np

    from nevergrad_zonp import ZerothOrder, minimize_vectorized

    adapter, q, period = _adapter(workload, device, settings_per_call)
    # The window is one Fisher period (iterations 1..T_ud): ZONP's refresh cost is amortised
    # as in a run.  Iteration 0 (a refresh, vmap warm-up) is not timed.
    iterations = period if iterations is None else iterations
    optimizer = ZerothOrder(sampler=sampler, num_directions=q, lr=1e-3, fisher_period=period)(
        parametrization=adapter.parametrization, budget=10**9
    )
    optimizer.attach(adapter)
    # warm-up iteration (vmap tracing, allocator), not timed
    optimizer.budget = q + 1
    minimize_vectorized(optimizer, adapter, fast_path=fast)
    if sampler == "natural" and steady_state:
        _factor_on_every_block(optimizer)
    blocks_with_fisher = int(getattr(optimizer, "num_blocks_with_fisher", 0))
    if waiting_ms is not None:
        _stand_in_for_forward(adapter, waiting_ms / 1e3, busy=False)
    elif busy_ms is not None:
        _stand_in_for_forward(adapter, busy_ms / 1e3, busy=True)
    timer, loss_timer = _Timer(adapter, "_call"), _Timer(adapter, "_losses")
    queries = adapter.queries
    optimizer.budget = queries + iterations * (q + 1) + 10**6  # no budget end inside the window
    steps = optimizer.num_steps
    began = time.perf_counter()
    count = 0

    def stop(opt: tp.Any, *_: tp.Any) -> None:
        nonlocal count
        count += 1
        if count >= iterations:
            opt.budget = adapter.queries  # ends the loop after this iteration

    minimize_vectorized(optimizer, adapter, callback=stop, fast_path=fast)
    total = time.perf_counter() - began
    return {
        "workload": workload,
        "method": "ZONP" if sampler == "natural" else "ZOI",
        "path": "fast" if fast else "per-candidate",
        "forward": "real" if waiting_ms is None and busy_ms is None else (
            f"waiting {waiting_ms:g} ms" if waiting_ms is not None else f"busy-wait {busy_ms:g} ms"
        ),
        "device": str(adapter.device),
        "blocks": int(optimizer.num_blocks),
        "blocks_with_fisher_at_start": blocks_with_fisher,
        "settings_per_call": adapter.settings_per_call,
        "parameters": adapter.dimension,
        "q": q,
        "iterations": optimizer.num_steps - steps,
        "queries": adapter.queries - queries,
        "ms_per_iteration": 1e3 * total / iterations,
        "forward_ms": 1e3 * timer.seconds / iterations,
        "overhead_ms": 1e3 * (total - timer.seconds) / iterations,
        "overhead_share": (total - timer.seconds) / timer.seconds if timer.seconds else float(np.nan),
        "loss_ms": 1e3 * loss_timer.seconds / iterations,
        "overhead_share_without_loss": (
            (total - timer.seconds - loss_timer.seconds) / timer.seconds if timer.seconds else float(np.nan)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, help="timed iterations (default: one Fisher period, 100 or 160)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs per cell, taken round-robin over the cells; the median is reported"
    )
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--methods", nargs="+", default=["ZOI", "ZONP"], choices=["ZOI", "ZONP"])
    parser.add_argument(
        "--paths", nargs="+", default=["per-candidate", "fast"], choices=["per-candidate", "fast"],
        help="which loop(s) to time (default both)",
    )
    parser.add_argument("--system-allocator", action="store_true", help="do not call reuse_freed_memory() (glibc defaults)")
    parser.add_argument(
        "--waiting-forward", type=float, metavar="MS",
        help="replace the forward by a wait of MS milliseconds that leaves the CPU free (a GPU or chip stand-in)",
    )
    parser.add_argument(
        "--busy-forward", type=float, metavar="MS",
        help="replace the forward by a busy-wait of MS milliseconds (0: no gap, the loop's work back to back)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of the network (default cpu; e.g. cuda)")
    parser.add_argument(
        "--settings-per-call", type=int, metavar="V",
        help="settings evaluated in one vmapped forward (default: the adapter's, 32; a GPU takes a whole iteration)",
    )
    parser.add_argument(
        "--first-period", action="store_true",
        help="time ZONP in its first Fisher period from a fresh start (no block with a factor) instead of the steady state",
    )
    parser.add_argument("--out", help="JSON file of all measurements")
    args = parser.parse_args()
    if not args.system_allocator:
        from nevergrad_zonp import reuse_freed_memory

        reuse_freed_memory()
    rows = []
    if args.waiting_forward is not None and args.busy_forward is not None:
        parser.error("--waiting-forward and --busy-forward exclude each other")
    if args.waiting_forward is not None:
        print(f"forward replaced by a wait of {args.waiting_forward:g} ms (--waiting-forward)\n")
    if args.busy_forward is not None:
        print(f"forward replaced by a busy-wait of {args.busy_forward:g} ms (--busy-forward)\n")
    if args.device != "cpu" or args.settings_per_call is not None:
        print(f"network on {args.device}, settings per vmapped call: {args.settings_per_call or 'the adapter default'}\n")
    print(
        "| workload | N | Q | method | path | ms / iteration | forward ms | overhead ms | overhead / forward "
        "| of which loss ms | overhead without loss / forward |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cells = [
        (workload, method, path == "fast")
        for workload in args.workloads
        for method in args.methods
        for path in args.paths
    ]
    # Round-robin over the cells, repeat after repeat, so that a drift of the machine's speed
    # touches every cell alike (a cell's repeats in a row would all see the same phase).
    runs_of: tp.Dict[tp.Tuple[tp.Any, ...], tp.List[dict]] = {cell: [] for cell in cells}
    for _ in range(args.repeats):
        for cell in cells:
            workload, method, fast = cell
            sampler = "natural" if method == "ZONP" else "isotropic"
            run = measure(
                workload, sampler, fast, args.iterations, args.waiting_forward, args.device, args.settings_per_call,
                args.busy_forward, steady_state=not args.first_period,
            )
            runs_of[cell].append(run)
            rows.append(run)
    for (workload, method, _), runs in runs_of.items():
        keys = ("ms_per_iteration", "forward_ms", "overhead_ms", "overhead_share", "loss_ms", "overhead_share_without_loss")
        med = {key: statistics.median(run[key] for run in runs) for key in keys}
        low, high = (f(run["overhead_share"] for run in runs) for f in (min, max))
        first = runs[0]
        print(
            f"| {workload} | {first['parameters']:,} | {first['q']} | {method} | {first['path']} | "
            f"{med['ms_per_iteration']:.1f} | {med['forward_ms']:.1f} | {med['overhead_ms']:.2f} | "
            f"{100 * med['overhead_share']:.1f} % ({100 * low:.1f}-{100 * high:.1f}) | {med['loss_ms']:.2f} | "
            f"{100 * med['overhead_share_without_loss']:.1f} % |",
            flush=True,
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
