"""The contract every offline recommender (baselines and the stage-aware model) implements.

Train and test logs share one id space (``EventLog.visitor_ids`` / ``catalog``), so a visitor index means
the same person in both; a visitor with no training events is "cold" and must still get a list.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from models.dataset import EventLog


class Ranker(Protocol):
    """Fit on a training log, then rank items for many visitors at once."""

    name: str

    def fit(self, train: EventLog) -> None:
        """Learn from ``train`` (events strictly before the split)."""

    def recommend(self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool) -> np.ndarray:
        """Top-``k`` item indices for each visitor.

        visitors  int32[u]  visitor indices into ``train.visitor_ids`` (may have no training events)
        now       POSIX seconds of the split: the moment the lists are shown
        returns   int32[u, k], best first; -1 pads rows where fewer than k items qualify
        ``exclude_seen`` drops items the visitor interacted with in training.
        """
        ...
