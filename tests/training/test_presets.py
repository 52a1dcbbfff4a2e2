"""The preset registry: one entry per ``--preset`` name with its reader and training defaults."""

from __future__ import annotations

import pytest

from models.domain import EventType
from models.weights import DEFAULT_POSITIVE
from training.factorization import FactorParams
from training.model_config import apply_config, config_document, parse_config, to_toml
from training.pipeline import config_for
from training.presets import PRESETS, read_movielens, read_otto, read_uci
from training.stage_model import StageModelConfig


def test_every_preset_names_its_reader() -> None:
    assert {name: p.reader for name, p in PRESETS.items()} == {
        "native": None,
        "uci-online-retail": read_uci,
        "movielens-100k": read_movielens,
        "otto": read_otto,
    }
    assert all(name == p.name and p.description for name, p in PRESETS.items())
    # what each one takes from a directory (none: the reader reads the directory itself)
    assert {name: p.directory_files for name, p in PRESETS.items()} == {
        "native": (".csv", ".tsv", ".jsonl", ".ndjson", ".json"),
        "uci-online-retail": (),
        "movielens-100k": (),
        "otto": (".jsonl", ".ndjson"),
    }


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_training_defaults_are_configurations_and_apply(name: str) -> None:
    training = PRESETS[name].training
    cfg = config_for(name)
    # a preset is a model configuration document: applied over the defaults it gives the preset's config,
    # and written out in full it gives it back
    assert apply_config(StageModelConfig(), training, name) == cfg
    doc = config_document(cfg)
    for section, value in training.items():
        if isinstance(value, dict):
            assert value.items() <= doc[section].items(), section
        else:
            assert doc[section] == value, section
    assert apply_config(StageModelConfig(), parse_config(to_toml(doc), name), name) == cfg


def test_config_for_known_answers_and_overrides() -> None:
    assert config_for(None).positive == DEFAULT_POSITIVE
    assert config_for("uci-online-retail").validation_fraction == 0.3
    ml = config_for("movielens-100k")
    assert (ml.validation, ml.positive) == ("holdout", frozenset({EventType.REVIEW}))
    assert ml.factors == FactorParams(epochs=20, max_sampled=30, warm_epochs=10)
    assert config_for("otto", seed=5, threads=None).seed == 5  # None leaves the default
    assert config_for("otto").threads == StageModelConfig().threads
