"""Tuning of a serving worker process, applied when the worker builds its app.

Granian forks its workers from a parent that has already imported numpy, so environment variables such as
``OPENBLAS_NUM_THREADS`` or ``MALLOC_MMAP_THRESHOLD_`` set by the parent come too late: OpenBLAS and glibc
read them once, at process start. Both are therefore set here at run time, through threadpoolctl and
glibc's ``mallopt``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

from threadpoolctl import threadpool_info, threadpool_limits

log = logging.getLogger("journeyrec.service")

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# score arrays are 400 kB at 100k items: below this threshold they come from the heap and freed ones are
# reused, instead of one fresh mmap (a page fault per 4 kB page) per array per request
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 128 << 20


def blas_threads() -> list[int]:
    """Threads of every BLAS library loaded in this process."""
    return [int(p["num_threads"]) for p in threadpool_info() if p.get("user_api") == "blas"]


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def tune_worker() -> None:
    """One BLAS thread (a request is one small GEMV; a pool per worker spinning on the same cores made
    throughput collapse under load) and freed score arrays kept on the heap."""
    threadpool_limits(limits=1, user_api="blas")
    if not keep_freed_memory():
        log.info("mallopt unavailable (not glibc): score arrays may be mmapped per request")
