"""Time of one ZONP draw on a block with a full Fisher factor, and of the ways it could be computed.

A draw of ``Q`` directions on a block of ``n`` solves ``L^T U = R`` with the block's
Cholesky factor ``L`` (``Q n^2 / 2`` multiply-adds).  Timed here on one BLAS and one torch
thread (as the harness runs), float32 (the default storage), the median of ``--repeats``
timings of ``--number`` calls each:

- ``trtrs``: LAPACK's ``strtrs`` called directly (what :class:`NaturalSampler` does);
- ``solve_triangular``: the same routine through ``scipy.linalg.solve_triangular``;
- ``inverse @ r``: a precomputed ``L^-T`` (once per refresh) times the noise (a dense
  matrix product, twice the flops, other rounding);
- ``trmm``: the same with BLAS's triangular product ``strmm``;
- ``torch``: ``torch.linalg.solve_triangular`` on the same float32 tensors.

Run: ``python comparisons/bench_natural_draw.py [--size 443] [--directions 100]``; prints a
markdown table (also the BLAS each library uses, which decides most of it).
"""

from __future__ import annotations

import argparse
import statistics
import timeit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=443, help="block size n (digits' blocks: 443)")
    parser.add_argument("--directions", type=int, default=100, help="Q")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--number", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import torch
    from scipy.linalg import solve_triangular
    from scipy.linalg.blas import strmm
    from scipy.linalg.lapack import strtrs
    from threadpoolctl import threadpool_info, threadpool_limits

    from nevergrad_zonp.optimizers.samplers import NaturalSampler

    torch.set_num_threads(1)
    n, q = args.size, args.directions
    rng = np.random.default_rng(0)
    jacobian = rng.standard_normal((4 * n, n))
    sampler = NaturalSampler(damping=0.1, smoothing=1.0)  # the default rho and storage: the factor a run keeps
    if not sampler.update(0, jacobian.T @ jacobian / (4 * n)):
        raise RuntimeError("the sampler refused the Fisher estimate")
    factor = sampler.factors[0]
    noise = rng.standard_normal((n, q)).astype(np.float32)
    inverse_t = np.ascontiguousarray(solve_triangular(factor.astype(np.float64), np.eye(n), lower=True).T.astype(np.float32))
    factor_t, noise_t = torch.from_numpy(factor), torch.from_numpy(noise)
    ways = {
        "trtrs": lambda: strtrs(factor.T, noise, lower=0, trans=0),
        "solve_triangular": lambda: solve_triangular(factor, noise, lower=True, trans="T", check_finite=False),
        "inverse @ r": lambda: inverse_t @ noise,
        "trmm": lambda: strmm(1.0, inverse_t, noise, lower=0),
        "torch": lambda: torch.linalg.solve_triangular(factor_t.T, noise_t, upper=True),
    }
    expected = ways["solve_triangular"]()
    assert np.array_equal(ways["trtrs"]()[0], expected), "the direct call must give solve_triangular's numbers"
    flops = q * n * n  # Q n^2 / 2 multiply-adds
    with threadpool_limits(limits=1):
        print(f"n = {n}, Q = {q}, float32, one thread; BLAS: " + ", ".join(
            f"{info['internal_api']} {info.get('version')} ({info.get('architecture')})" for info in threadpool_info()
        ) + f"; torch: {torch.__version__}\n")
        print("| way | ms per draw | Gflop/s (Q n^2 flops) |")
        print("|---|---|---|")
        for name, call in ways.items():
            call()
            seconds = statistics.median(t / args.number for t in timeit.repeat(call, number=args.number, repeat=args.repeats))
            print(f"| {name} | {1e3 * seconds:.3f} | {flops / seconds / 1e9:.0f} |", flush=True)


if __name__ == "__main__":
    main()
