"""The workflows behind ``journeyrec train`` and ``journeyrec evaluate``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from models import artifact
from models.dataset import EventLog
from models.journey import stages_at
from training.baselines import (
    BuyAgainRanker,
    ItemKnnRanker,
    PlainLightFMRanker,
    PopularityRanker,
    TifuKnnRanker,
    TrendingRanker,
)
from training.model_config import apply_config
from training.presets import PRESETS
from training.stage_model import StageAwareRanker, StageModelConfig, fit_stage_model


def config_for(
    preset: str | None, config: Mapping[str, Any] | None = None, config_label: str = "", **overrides: Any
) -> StageModelConfig:
    """The config of a preset (``training.presets.PRESETS``), then a model configuration document
    (``training.model_config``; ``config_label`` names it in errors) over it, then explicit overrides of
    ``StageModelConfig`` fields (None values are ignored)."""
    known = PRESETS.get(preset or "native", PRESETS["native"])
    cfg = apply_config(StageModelConfig(), known.training, f"preset {known.name}")
    if config is not None:
        cfg = apply_config(cfg, config, config_label or "config")
    return msgspec.structs.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def train_and_publish(
    log: EventLog,
    out_dir: Path,
    cfg: StageModelConfig,
    progress: Callable[[str], None] | None = None,
    *,
    config_source: str = "",
) -> Path:
    """Fit the stage-aware model on all of ``log``, publish it under ``out_dir``; returns its directory.
    config_source: the configuration file ``cfg`` was read from (its name, in the manifest's metrics)."""
    t0 = time.perf_counter()
    fitted = fit_stage_model(log, cfg, progress)
    fit_s = time.perf_counter() - t0
    if progress:
        progress("publishing")
    return artifact.publish(
        out_dir,
        factors=fitted.scorer.factors,
        tables=fitted.scorer.tables,
        blend=fitted.blend,
        blend_weights=fitted.scorer.blend_weights,
        catalog=log.catalog,
        user_vocab=fitted.user_vocab,
        item_vocab=fitted.item_vocab,
        price_edges=fitted.price_edges,
        rules=cfg.rules,
        weights=cfg.weights,
        serving=cfg.serving,
        data_fingerprint=log.fingerprint(),
        trained_until=fitted.trained_until,
        n_visitors=log.n_visitors,
        parameters=msgspec.to_builtins(cfg),
        metrics={
            "fit_seconds": round(fit_s, 2),
            "events": log.n_events,
            "visitors": log.n_visitors,
            "items": log.n_items,
            "source": log.source,
            "config": config_source,
        },
    )


def rankers_for(cfg: StageModelConfig, progress: Callable[[str], None] | None = None) -> list[Any]:
    """The stage-aware model and every baseline, configured alike."""
    return [
        StageAwareRanker(cfg, progress),
        PlainLightFMRanker(cfg.factors, cfg.weights, seed=cfg.seed, threads=cfg.threads),
        PopularityRanker(cfg.weights, cfg.positive),
        TrendingRanker(cfg.weights, cfg.positive),
        BuyAgainRanker(cfg.weights, cfg.positive),
        ItemKnnRanker(cfg.weights, cfg.positive),
        TifuKnnRanker(cfg.weights, cfg.positive),
    ]


def split_stages(
    train: EventLog, full: EventLog, at: float, end: float, cfg: StageModelConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Every visitor's stage at the split (from training events) and at the end of the test window."""
    at_split, _ = stages_at(train, at, cfg.rules)
    at_end, _ = stages_at(full, end, cfg.rules)
    return at_split, at_end
