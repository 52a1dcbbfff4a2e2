"""``GET /v1/experiments/{id}/results``: an experiment's results from the feedback counters.

The counters are written at ingest by the feedback store (``service.feedback.store_base.FeedbackStore``);
this module reads them through the one method it needs, ``experiment_stats`` (``StatsProvider``), whose
cells are the ``VariantStageStats`` and ``DailyCell`` below (the same fields as the feedback store's), and
computes the results with ``models.experiments.results`` (the statistics are documented there). Reading
costs O(variants x stages + days): the counters are kept per cell, never recomputed from events.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from models.experiments import Experiment, ExperimentResults, results


class VariantStageStats(msgspec.Struct, frozen=True):
    """Per-visitor sums of one (variant, stage) cell; ``stage`` "all" counts each visitor once per variant.

    visitors  distinct visitors served at least one list of the variant in that stage
    sums      metric -> sum over visitors
    squares   metric -> sum over visitors of (per-visitor value)^2
    cross     "clicks*impressions" -> sum over visitors of clicks_v * impressions_v
    """

    variant: str
    stage: str
    visitors: int
    sums: dict[str, float]
    squares: dict[str, float]
    cross: dict[str, float]


class DailyCell(msgspec.Struct, frozen=True):
    """Totals of one day (YYYY-MM-DD, UTC), variant and stage."""

    day: str
    variant: str
    stage: str
    counts: dict[str, float]


class StatsProvider(Protocol):
    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]: ...


class NoFeedback:
    """A provider with no counters (the feedback store is not configured): every result is empty."""

    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]:  # noqa: ARG002
        return [], []


async def experiment_results(experiment: Experiment, provider: StatsProvider) -> ExperimentResults:
    stats, daily = await provider.experiment_stats(experiment.id)
    return results(experiment, stats, daily)
