"""Parameter blocks of ZO-NP and the memory each one's Fisher matrix costs.

The flat parameter vector of size N is split into ``B = ceil(N / N_max)`` contiguous,
nearly equal blocks (sizes differ by at most one; docs/method.md, "Blocks and the black-box
Fisher").  The paper's
four settings all follow this rule (e.g. N = 2,580, N_max = 512 gives B = 6 blocks of
430).  Each iteration perturbs and steps one block.
"""

from __future__ import annotations

import math

import numpy as np

from .resources import available_memory_bytes


def block_bounds(dimension: int, max_block_size: int) -> np.ndarray:
    """Start offsets of the ``B = ceil(N / N_max)`` nearly equal contiguous blocks, plus ``N``.

    Block ``b`` covers coordinates ``bounds[b]:bounds[b + 1]``.
    """
    if dimension < 1:
        raise ValueError(f"dimension must be positive, got {dimension}")
    if max_block_size < 1:
        raise ValueError(f"max_block_size (N_max) must be positive, got {max_block_size}")
    num_blocks = math.ceil(dimension / max_block_size)
    base, extra = divmod(dimension, num_blocks)
    sizes = np.full(num_blocks, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def check_fisher_memory(
    bounds: np.ndarray,
    matrices_per_block: int,
    itemsize: int,
    available: int | None = None,
    rank: int | None = None,
) -> int:
    """Worst-case bytes of the per-block Fisher store; raises ``MemoryError`` if they cannot fit.

    Called before anything is allocated.  Full form (``rank=None``): ``matrices_per_block``
    dense ``n_b x n_b`` matrices of ``itemsize`` bytes for every block.  Compact form: an
    ``n_b x r`` basis and ``r`` eigenvalues per block.  Plus the transient float64 work
    space of the largest block's refresh (Fisher, factorisation, eigenvectors).
    """
    sizes = np.diff(bounds).astype(np.float64)
    if rank is None:
        stored = matrices_per_block * itemsize * float(np.sum(sizes**2))
        form = f"{matrices_per_block} dense n_b x n_b matrix(es) per block"
    else:
        ranks = np.minimum(sizes, rank)
        stored = itemsize * float(np.sum(sizes * ranks)) + 8 * float(np.sum(ranks))
        form = f"an n_b x {rank} basis per block"
    needed = stored + 3 * 8 * float(sizes.max() ** 2)
    available = available_memory_bytes() if available is None else available
    if needed > available:
        advice = "lower max_block_size (N_max)" + (" or use fisher_rank" if rank is None else " or fisher_rank")
        raise MemoryError(
            f"Fisher matrices for {len(sizes)} block(s) of up to {int(sizes.max())} parameters need "
            f"{needed / 2**30:.2f} GiB ({form}) but only {available / 2**30:.2f} GiB are available: {advice}."
        )
    return int(needed)
