"""Paired bootstrap over visitors: percentile intervals of means and of differences of means.

Every column of a per-visitor table (a metric of a model) is resampled with the same draws of visitors, so
the interval of a difference between two columns accounts for their correlation (the same visitors are
easy or hard for every model). Draws are an index matrix [resamples, visitors] made chunk by chunk from one
seeded generator and turned into counts per visitor, so that a resample's means are one matrix product and
the result does not depend on the chunk size.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95

#: index cells one chunk of draws may hold
_CHUNK_CELLS = 4_000_000


def resample_means(
    values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0, *, chunk_cells: int = _CHUNK_CELLS
) -> np.ndarray:
    """float64 [resamples, c]: the column means of ``values`` (float [u, c], a row per visitor) over each
    resample of its u rows drawn with replacement (``seed``). u = 0 gives NaN."""
    values = np.asarray(values, np.float64)
    u, c = values.shape
    if u == 0:
        return np.full((resamples, c), np.nan)
    rng = np.random.default_rng(seed)
    step = max(1, chunk_cells // u)
    out = np.empty((resamples, c))
    for lo in range(0, resamples, step):
        n = min(step, resamples - lo)
        idx = rng.integers(0, u, size=(n, u), dtype=np.int64)
        counts = np.bincount((idx + (np.arange(n) * u)[:, None]).ravel(), minlength=n * u).reshape(n, u)
        out[lo : lo + n] = counts @ values / u
    return out


def percentile_interval(means: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """float64 [c, 2]: the (1 - level) / 2 and (1 + level) / 2 quantiles of each column of ``means``
    (float [resamples, c], from ``resample_means``)."""
    tail = (1.0 - level) / 2.0
    return np.quantile(means, [tail, 1.0 - tail], axis=0).T


def excludes_zero(interval: tuple[float, float] | list[float]) -> bool:
    """Whether a (lo, hi) interval lies wholly above or wholly below 0."""
    lo, hi = interval
    return bool(lo > 0 or hi < 0)
