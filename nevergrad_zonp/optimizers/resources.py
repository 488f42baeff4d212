"""Memory facts shared by the optimizers: what is available, and how big an archive to keep."""

from __future__ import annotations

import os

from nevergrad.optimization import utils

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
