"""Index ranges without a Python loop: the entries of some rows (or columns) of a compressed sparse matrix."""

from __future__ import annotations

import numpy as np


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """int64 [sum(counts)]: the indices start, start + 1, ... of every range (starts, counts int [r]) in
    order, without a Python loop (e.g. the entries of some rows of a csr matrix)."""
    total = int(counts.sum())
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)
