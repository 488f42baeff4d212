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
    slows every ``tell`` (docs/method.md, "Nevergrad integration").
    """
    max_len = max(10, ARCHIVE_BYTES // (16 * dimension))
    if max_len >= 300:
        return None
    return utils.Pruning(min_len=max(1, max_len // 3), max_len=max_len)


_CONTROLLER: tp.Optional[ThreadpoolController] = None
_BLAS_THREADS: tp.Tuple[tp.Callable[[], tp.Optional[int]], ...] = ()
_NO_CONTEXT = contextlib.nullcontext()


def single_threaded_blas() -> tp.ContextManager[tp.Any]:
    """Context in which numpy/scipy BLAS and LAPACK calls run on one thread.

    The optimizers' linear algebra is small (blocks of at most a few thousand coordinates),
    while the network queries run in torch's own thread pool.  A multi-threaded OpenBLAS
    call leaves its worker threads spinning for a while after it returns, and they take
    the cores from torch's threads.  The user's own thread settings are restored on exit.
    """
    global _CONTROLLER, _BLAS_THREADS
    if _CONTROLLER is None:  # built lazily, once numpy and scipy have loaded their BLAS
        _CONTROLLER = ThreadpoolController()
        _BLAS_THREADS = tuple(lib.get_num_threads for lib in _CONTROLLER.lib_controllers if lib.user_api == "blas")
    for threads in _BLAS_THREADS:  # asked on every call: the user may change them between calls
        if (threads() or 1) > 1:
            return _CONTROLLER.limit(limits=1, user_api="blas")
    return _NO_CONTEXT


#: glibc ``mallopt`` parameters (``malloc.h``).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def reuse_freed_memory(
    mmap_threshold: int = 256 * 2**20, trim_threshold: int = 2**30, top_pad: int = 256 * 2**20
) -> bool:
    """Makes glibc's allocator keep freed memory for reuse; returns whether it applied.

    A batched forward of ``Q + 1`` (or ``n_b + 1``) settings allocates and frees tensors of
    tens of megabytes on every iteration.  glibc serves such blocks with ``mmap`` and
    returns them with ``munmap``, so every iteration touches fresh pages (page faults).
    With larger ``mmap`` and trim thresholds the blocks stay in the heap and are reused.
    The arguments are bytes (non-negative ints; ``ValueError`` otherwise), the same values
    as the environment variables ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and
    ``MALLOC_TOP_PAD_``.

    It is process-wide and lasting: the process keeps up to ``trim_threshold`` bytes of
    freed memory instead of returning it to the system.  The harness calls it in each run's
    process; call it once at the start of a training script if that trade suits you.
    Returns ``False`` (and changes nothing) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold), ("top_pad", top_pad)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int of bytes, got {value!r}")
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        libc = ctypes.CDLL(library)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # glibc only: other C libraries' mallopt takes other parameters
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    limit = 2**31 - 1
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad))
    return all(mallopt(option, min(value, limit)) == 1 for option, value in settings)
