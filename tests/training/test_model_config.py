"""Model configuration files: what they change, what they keep, and the one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyrec.cli import main
from models.domain import EventType
from models.errors import InvalidInputError
from models.journey import DEFAULT_RULES
from training.factorization import FactorParams
from training.model_config import apply_config, config_document, parse_config, read_config, to_toml
from training.pipeline import config_for
from training.stage_model import StageModelConfig

EXAMPLE = """
positive = ["purchase", "add_to_cart"]

[lightfm]
no_components = 32
loss = "bpr"
learning_rate = 0.1
epochs = 7

[event_weights]
product_view = 2

[journey]
cart_ttl_hours = 24

[journey.consider_weights]
product_view = 1.5

[blend]
validation_fraction = 0.25

[candidates]
neighbours = 40

[serving]
context_weight = 0.5
"""


def test_every_section_changes_only_what_it_names() -> None:
    base = StageModelConfig()
    cfg = apply_config(base, parse_config(EXAMPLE, "model.toml"), "model.toml")
    assert cfg.positive == frozenset({EventType.PURCHASE, EventType.ADD_TO_CART})
    assert cfg.factors == FactorParams(no_components=32, loss="bpr", learning_rate=0.1, epochs=7)
    assert cfg.weights.weights[EventType.PRODUCT_VIEW] == 2.0
    assert cfg.weights.weights[EventType.PURCHASE] == base.weights.weights[EventType.PURCHASE]
    assert cfg.rules.cart_ttl_hours == 24.0
    assert cfg.rules.advocacy_days == DEFAULT_RULES.advocacy_days
    assert cfg.rules.consider_weights == {EventType.PRODUCT_VIEW: 1.5}  # the table replaces the default one
    assert (cfg.validation_fraction, cfg.validation) == (0.25, base.validation)
    assert cfg.neighbours == 40
    assert cfg.serving.context_weight == 0.5
    assert cfg.serving.anchor_threshold == base.serving.anchor_threshold
    assert (cfg.seed, cfg.threads, cfg.max_validation_visitors) == (base.seed, base.threads, 6000)


def test_an_empty_file_is_the_base_and_a_written_config_reads_back() -> None:
    base = config_for("movielens-100k")
    assert apply_config(base, parse_config("", "empty.toml"), "empty.toml") == base
    changed = apply_config(base, parse_config(EXAMPLE, "m"), "m")
    text = to_toml(config_document(changed))
    assert apply_config(StageModelConfig(), parse_config(text, "written"), "written") == changed


def test_config_applies_over_the_preset_and_overrides_over_both() -> None:
    doc = parse_config("[lightfm]\nno_components = 16\n", "m.toml")
    cfg = config_for("movielens-100k", doc, "m.toml", seed=9)
    assert cfg.factors == FactorParams(epochs=20, max_sampled=30, warm_epochs=10, no_components=16)
    assert cfg.validation == "holdout"
    assert cfg.seed == 9


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[lightfn]\nepochs = 3\n", ["m.toml", "unknown key 'lightfn'", "did you mean lightfm?"]),
        ("[lightfm]\nepoch = 3\n", ["m.toml: lightfm:", "unknown key 'epoch'", "did you mean epochs?"]),
        ('[lightfm]\nepochs = "ten"\n', ["m.toml: lightfm.epochs: expected `int`, got `str`"]),
        ('[lightfm]\nloss = "wrap"\n', ["m.toml: lightfm.loss:", "unknown loss 'wrap'", "warp?"]),
        ("[lightfm]\nepochs = 0\n", ["m.toml: lightfm.epochs: expected an integer >= 1, got 0"]),
        ("[lightfm]\nlearning_rate = -1\n", ["lightfm.learning_rate: expected a number > 0"]),
        ('positive = ["purchased"]\n', ["m.toml: positive:", "unknown event 'purchased'", "purchase?"]),
        ("positive = []\n", ["m.toml: positive: expected a non-empty list of event names"]),
        ("[event_weights]\nbuy = 5\n", ["m.toml: event_weights:", "unknown key 'buy'"]),
        ('[event_weights]\npurchase = "high"\n', ["m.toml: event_weights", "expected `float`, got `str`"]),
        ("[journey]\ncart_ttl_hours = 0\n", ["m.toml: journey: JourneyRules.cart_ttl_hours must be > 0"]),
        ("[journey.consider_weights]\nview = 1\n", ["m.toml: journey.consider_weights:", "'view'"]),
        ('[blend]\nvalidation = "random"\n', ["m.toml: blend.validation:", "unknown validation 'random'"]),
        ("[blend]\nvalidation_fraction = 1.5\n", ["blend.validation_fraction: expected a number between"]),
        ("[candidates]\nneighbours = 0\n", ["m.toml: candidates.neighbours: expected an integer >= 1"]),
        (
            "[serving]\nbasket_neighbours = 0\n",
            ["m.toml: serving: ServingRules.basket_neighbours must be >= 1"],
        ),
        (
            "[serving]\nbasket_group_decay = 1.5\n",
            ["m.toml: serving: ServingRules.basket_group_decay must be in"],
        ),
        ("lightfm = 3\n", ["m.toml: lightfm: expected a table, got int"]),
        ("[lightfm\n", ["m.toml: not valid TOML"]),
    ],
)
def test_one_line_errors_name_file_key_and_expectation(text: str, needles: list[str]) -> None:
    with pytest.raises(InvalidInputError) as e:
        apply_config(StageModelConfig(), parse_config(text, "m.toml"), "m.toml")
    message = str(e.value)
    assert "\n" not in message
    for n in needles:
        assert n in message, (n, message)


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read"):
        read_config(tmp_path / "absent.toml")


def test_cli_refuses_a_bad_config_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "model.toml"
    bad.write_text('[lightfm]\nloss = "wrap"\n')
    events = tmp_path / "events.csv"
    events.write_text("visitor_id,item_id,event,timestamp\nv,i,purchase,2024-01-01T00:00:00Z\n")
    argv = ["train", "--events", str(events), "--out", str(tmp_path / "m"), "--config", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "model.toml: lightfm.loss: unknown loss 'wrap'" in err


def test_the_readme_example_is_a_valid_configuration() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = apply_config(StageModelConfig(), parse_config(block, "README"), "README")
    assert cfg.positive == frozenset({EventType.PURCHASE})
