"""Process resources: the allocator setting the harness applies in every run."""

import ctypes.util
import platform

import pytest
import torch

from nevergrad_zonp import reuse_freed_memory


def test_reuse_freed_memory_applies_on_glibc_and_leaves_torch_working():
    applied = reuse_freed_memory()
    is_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" and ctypes.util.find_library("c")
    assert applied is bool(is_glibc)
    big = torch.ones(2**23)  # 32 MB: served from the heap now, not by mmap
    assert float(big.sum()) == 2**23
    del big
    assert reuse_freed_memory(mmap_threshold=128 * 2**10, trim_threshold=128 * 2**10, top_pad=0) is applied  # glibc's defaults back


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1"])
def test_reuse_freed_memory_names_a_bad_setting(bad):
    with pytest.raises(ValueError, match="mmap_threshold must be a non-negative int"):
        reuse_freed_memory(mmap_threshold=bad)
