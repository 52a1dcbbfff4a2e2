"""Worker tuning: one BLAS thread even though the BLAS library was loaded before the call."""

from __future__ import annotations

import platform

import numpy as np
from threadpoolctl import threadpool_limits

from service import process_tuning


def test_tune_worker_leaves_one_blas_thread() -> None:
    assert np.ones(4) @ np.ones(4) == 4.0  # BLAS is loaded and initialised before tuning, as in a fork
    before = process_tuning.blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    try:
        process_tuning.tune_worker()
        assert process_tuning.blas_threads() == [1] * len(before)
    finally:
        threadpool_limits(limits=max(before), user_api="blas")


def test_keep_freed_memory_takes_on_glibc() -> None:
    assert process_tuning.keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
