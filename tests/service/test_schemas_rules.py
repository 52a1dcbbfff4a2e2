"""The answer's merchandising fields: present when rules changed something, left out otherwise, so that
answers without rules keep the fields they always had."""

from __future__ import annotations

import msgspec

from models.domain import Source, Stage
from models.journey import StageResult
from models.request import RecommendedItem, RuleEffect
from service.schemas import ItemOut, RecommendationsOut, StageOut, items_out

PLAIN = RecommendedItem("a", 1.0, Source.POPULAR, "a popular choice")


def _answer(**kw: object) -> dict[str, object]:
    out = RecommendationsOut(
        visitor_id="v",
        stage=StageOut.of(StageResult(Stage.AWARENESS, 1.0, [])),
        products=items_out([PLAIN]),
        content=[],
        model_version="m",
        fallback=False,
        recommendation_id="01J0000000000000000000000",
        **kw,  # type: ignore[arg-type]
    )
    return msgspec.json.decode(msgspec.json.encode(out))


def test_an_item_without_rules_encodes_as_it_always_did() -> None:
    assert msgspec.json.encode(ItemOut.of(PLAIN)) == (
        b'{"item_id":"a","score":1.0,"source":"popular","reason":"a popular choice"}'
    )


def test_an_item_names_the_rules_that_changed_it() -> None:
    pinned = msgspec.structs.replace(
        PLAIN, rules=(RuleEffect("spring-sale", "pinned"), RuleEffect("kettles", "boosted"))
    )
    assert msgspec.json.decode(msgspec.json.encode(ItemOut.of(pinned)))["rules"] == [
        {"rule": "spring-sale", "effect": "pinned"},
        {"rule": "kettles", "effect": "boosted"},
    ]


def test_the_answer_carries_the_rules_version_and_fallback_only_with_rules() -> None:
    fields = "visitor_id stage products content model_version fallback recommendation_id"
    assert set(_answer()) == set(fields.split())
    got = _answer(rules_version=3, rules_fallback=True)
    assert got["rules_version"] == 3
    assert got["rules_fallback"] is True
    assert "rules_fallback" not in _answer(rules_version=0)
