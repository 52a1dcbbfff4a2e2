"""``GET /v1/experiments/{id}/results``: an experiment's results from the feedback counters.

The counters are written at ingest by the feedback store (``service.feedback.store_base.FeedbackStore``);
this module reads them through the one method it needs, ``experiment_stats`` (``StatsProvider``), whose
cells are ``VariantStageStats`` and ``DailyCell`` (``models.experiments``: the contract's fields), and
computes the results with ``models.experiments.results`` (the statistics are documented there). Reading
costs O(variants x stages + days): the counters are kept per cell, never recomputed from events.
"""

from __future__ import annotations

from typing import Protocol

from models.experiments import DailyCell, Experiment, ExperimentResults, VariantStageStats, results

__all__ = ["DailyCell", "StatsProvider", "VariantStageStats", "experiment_results"]


class StatsProvider(Protocol):
    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]: ...


async def experiment_results(experiment: Experiment, provider: StatsProvider) -> ExperimentResults:
    stats, daily = await provider.experiment_stats(experiment.id)
    return results(experiment, stats, daily)
