"""Machine resources shared by the optimizers: memory available, archive size, BLAS threads."""

from __future__ import annotations

import contextlib
import os
import typing as tp

from nevergrad.optimization import utils
from threadpoolctl import ThreadpoolController

#: Nevergrad's archive keeps every told point (about 16 bytes per coordinate); cap it here.
ARCHIVE_BYTES = 64 * 2**20


def available_memory_bytes() -> int:
    """Memory available to a new allocation: ``psutil`` if installed, else ``sysconf``."""
    try:
        import psutil
    except ImportError:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    return int(psutil.virtual_memory().available)


def archive_pruning(dimension: int) -> utils.Pruning | None:
    """A pruning rule that keeps the archive near :data:`ARCHIVE_BYTES`, or ``None`` if the default fits.

    Nevergrad's default keeps about 300 points: at ``d = 200k`` that is about 0.5 GB and
    slows every ``tell`` (DESIGN.md section 8).
    """
    max_len = max(10, ARCHIVE_BYTES // (16 * dimension))
    if max_len >= 300:
        return None
    return utils.Pruning(min_len=max(1, max_len // 3), max_len=max_len)


_CONTROLLER: tp.Optional[ThreadpoolController] = None


def single_threaded_blas() -> tp.ContextManager[tp.Any]:
    """Context in which numpy/scipy BLAS and LAPACK calls run on one thread.

    The optimizers' linear algebra is small (blocks of at most a few thousand coordinates),
    while the network queries run in torch's own thread pool.  A multi-threaded OpenBLAS
    call leaves its worker threads spinning for a while after it returns, and they take
    the cores from torch's threads: with 2 cores and 2 torch threads ZONP's per-iteration
    triangular solve made every query 1.7x slower than ZOI's (``bench_zo_speed.py``).
    The user's own thread settings are restored on exit.
    """
    global _CONTROLLER
    if _CONTROLLER is None:  # built lazily, once numpy and scipy have loaded their BLAS
        _CONTROLLER = ThreadpoolController()
    if not any(lib.user_api == "blas" and lib.num_threads > 1 for lib in _CONTROLLER.lib_controllers):
        return contextlib.nullcontext()
    return _CONTROLLER.limit(limits=1, user_api="blas")
