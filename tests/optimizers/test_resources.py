"""Process resources: the allocator setting the harness applies in every run."""

import contextlib
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


def test_single_threaded_blas_limits_blas_to_one_thread_inside_and_restores_the_user_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    from nevergrad_zonp.optimizers.resources import single_threaded_blas

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    if not blas_threads():  # nothing to limit: the context must then be a no-op
        assert isinstance(single_threaded_blas(), contextlib.nullcontext)
        return
    with threadpool_limits(limits=2, user_api="blas"):  # asked on every call: a change between calls counts
        before = blas_threads()
        with single_threaded_blas():
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == before
    with threadpool_limits(limits=1, user_api="blas"):
        with single_threaded_blas():
            assert blas_threads() == [1] * len(before)
        assert blas_threads() == [1] * len(before)
