"""Model configuration files (``--config model.toml``): the knobs of ``StageModelConfig`` without code edits.

Every key is optional; a key given replaces the value of the configuration it applies over (the
``--preset``'s, else the defaults). The presets' own settings are written in the same form
(``training.presets.Preset.training``) and applied by the same code. Sections and keys:

    positive = ["purchase"]   # events that count as "the visitor wanted this item"
    [lightfm]                 # training.factorization.FactorParams: no_components, loss, learning_rate,
                              # item_alpha, user_alpha, max_sampled, epochs, warm_epochs, max_weight
    [event_weights]           # event name = interest weight (models.weights.EventWeights)
    [journey]                 # models.journey.JourneyRules (and [journey.consider_weights])
    [blend]                   # validation ("time" | "holdout"), validation_fraction,
                              # max_validation_visitors
    [candidates]              # neighbours: similar items kept per item
    [serving]                 # models.serving_rules.ServingRules

A wrong key, type or value is one line naming the file, the key and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from models.domain import EventType
from models.errors import InvalidInputError
from models.journey import JourneyRules
from models.serving_rules import ServingRules
from models.weights import EventWeights
from training.factorization import FactorParams
from training.stage_model import StageModelConfig
from training.tables import unknown_name

#: section -> (StageModelConfig field, its struct type)
_STRUCT_SECTIONS: dict[str, tuple[str, type[msgspec.Struct]]] = {
    "lightfm": ("factors", FactorParams),
    "journey": ("rules", JourneyRules),
    "serving": ("serving", ServingRules),
}
#: section -> its keys, each a StageModelConfig field of the same name
_FIELD_SECTIONS: dict[str, tuple[str, ...]] = {
    "blend": ("validation", "validation_fraction", "max_validation_visitors"),
    "candidates": ("neighbours",),
}
TOP_KEYS = ("positive", "event_weights", *_STRUCT_SECTIONS, *_FIELD_SECTIONS)
LOSSES = ("warp", "bpr", "logistic", "warp-kos")
VALIDATIONS = ("time", "holdout")
EVENTS = [e.value for e in EventType]


def _fail(label: str, where: str, message: str) -> InvalidInputError:
    return InvalidInputError(f"{label}: {where}: {message}" if where else f"{label}: {message}")


def parse_config(text: str, label: str) -> dict[str, Any]:
    """The TOML document ``text`` (``label`` names it in errors)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _fail(label, "", f"not valid TOML: {e}") from None


def read_config(path: Path) -> dict[str, Any]:
    """The TOML file at ``path``; a one-line error when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(str(path), "", f"cannot be read ({e.__class__.__name__})") from None
    return parse_config(text, str(path))


def _keys(label: str, where: str, section: Any, valid: list[str]) -> Mapping[str, Any]:
    if not isinstance(section, Mapping):
        raise _fail(label, where, f"expected a table, got {type(section).__name__}")
    for key in section:
        if key not in valid:
            raise _fail(label, where, unknown_name("key", str(key), valid))
    return section


def _convert(label: str, where: str, data: Any, typ: Any) -> Any:
    try:
        return msgspec.convert(data, typ, strict=True)
    except (msgspec.ValidationError, ValueError, TypeError) as e:
        # msgspec: "Expected `int`, got `str` - at `$.epochs`" -> "lightfm.epochs: expected `int`, got `str`"
        found = re.fullmatch(r"(.*) - at `\$(.*)`", str(e))
        message, path = found.groups() if found else (str(e), "")
        if message.startswith("Expected"):
            message = "e" + message[1:]
        raise _fail(label, where + path, message) from None


def _event_names(label: str, where: str, names: Any) -> None:
    for name in names:
        if name not in EVENTS:
            raise _fail(label, where, unknown_name("event", str(name), EVENTS))


def apply_config(base: StageModelConfig, doc: Mapping[str, Any], label: str) -> StageModelConfig:
    """``base`` with every setting of ``doc`` (the format above) replaced; InvalidInputError naming
    ``label`` and the key for anything unknown or invalid."""
    _keys(label, "", doc, list(TOP_KEYS))
    changes: dict[str, Any] = {}
    if "positive" in doc:
        names = doc["positive"]
        if not isinstance(names, list) or not names:
            raise _fail(label, "positive", "expected a non-empty list of event names")
        _event_names(label, "positive", names)
        changes["positive"] = frozenset(EventType(n) for n in names)
    if "event_weights" in doc:
        section = _keys(label, "event_weights", doc["event_weights"], EVENTS)
        weights = _convert(label, "event_weights", dict(section), dict[EventType, float])
        changes["weights"] = EventWeights(weights={**base.weights.weights, **weights})
    for name, (field, typ) in _STRUCT_SECTIONS.items():
        if name not in doc:
            continue
        valid = [f.name for f in msgspec.structs.fields(typ)]
        section = _keys(label, name, doc[name], valid)
        if name == "journey" and "consider_weights" in section:
            _keys(label, "journey.consider_weights", section["consider_weights"], EVENTS)
        current = msgspec.to_builtins(getattr(base, field))
        changes[field] = _convert(label, name, {**current, **section}, typ)
    for name, keys in _FIELD_SECTIONS.items():
        if name in doc:
            section = _keys(label, name, doc[name], list(keys))
            current = {k: getattr(base, k) for k in keys}
            fields = _convert(label, name, {**current, **section}, _Fields[name])
            changes.update({k: getattr(fields, k) for k in keys})
    cfg = msgspec.structs.replace(base, **changes)
    _check(cfg, label)
    return cfg


class _Blend(msgspec.Struct, frozen=True, kw_only=True):
    validation: str
    validation_fraction: float
    max_validation_visitors: int


class _Candidates(msgspec.Struct, frozen=True, kw_only=True):
    neighbours: int


_Fields: dict[str, type[msgspec.Struct]] = {"blend": _Blend, "candidates": _Candidates}


def _check(cfg: StageModelConfig, label: str) -> None:
    """Ranges the structs' types do not say."""
    f = cfg.factors
    if f.loss not in LOSSES:
        raise _fail(label, "lightfm.loss", unknown_name("loss", f.loss, list(LOSSES)))
    for key in ("no_components", "epochs", "max_sampled"):
        if getattr(f, key) < 1:
            raise _fail(label, f"lightfm.{key}", f"expected an integer >= 1, got {getattr(f, key)}")
    for key in ("learning_rate", "max_weight"):
        if not getattr(f, key) > 0:
            raise _fail(label, f"lightfm.{key}", f"expected a number > 0, got {getattr(f, key)}")
    for key in ("item_alpha", "user_alpha", "warm_epochs"):
        if getattr(f, key) < 0:
            raise _fail(label, f"lightfm.{key}", f"expected a number >= 0, got {getattr(f, key)}")
    if cfg.validation not in VALIDATIONS:
        raise _fail(label, "blend.validation", unknown_name("validation", cfg.validation, list(VALIDATIONS)))
    if not 0.0 < cfg.validation_fraction < 1.0:
        raise _fail(
            label,
            "blend.validation_fraction",
            f"expected a number between 0 and 1, got {cfg.validation_fraction}",
        )
    if cfg.max_validation_visitors < 1:
        raise _fail(label, "blend.max_validation_visitors", "expected an integer >= 1")
    if cfg.neighbours < 1:
        raise _fail(label, "candidates.neighbours", f"expected an integer >= 1, got {cfg.neighbours}")


def config_document(cfg: StageModelConfig) -> dict[str, Any]:
    """``cfg``'s settings in the file format (every key), so that ``apply_config`` of it gives ``cfg``."""
    return {
        "positive": sorted(e.value for e in cfg.positive),
        "lightfm": msgspec.to_builtins(cfg.factors),
        "event_weights": {
            e.value: w for e, w in sorted(cfg.weights.weights.items(), key=lambda t: t[0].code)
        },
        "journey": msgspec.to_builtins(cfg.rules),
        "blend": {k: getattr(cfg, k) for k in _FIELD_SECTIONS["blend"]},
        "candidates": {k: getattr(cfg, k) for k in _FIELD_SECTIONS["candidates"]},
        "serving": msgspec.to_builtins(cfg.serving),
    }


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"no TOML form for {type(v).__name__}")


def to_toml(doc: Mapping[str, Any]) -> str:
    """A document of the file format (``config_document``) as TOML text: top-level values, then tables and
    their sub-tables."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in doc.items():
        if isinstance(value, Mapping):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_value(value)}")
    while tables:
        name, table = tables.pop(0)
        lines += ["", f"[{name}]"]
        sub = []
        for key, value in table.items():
            if isinstance(value, Mapping):
                sub.append((f"{name}.{key}", value))
            else:
                lines.append(f"{key} = {_value(value)}")
        tables[0:0] = sub
    return "\n".join(lines).lstrip("\n") + "\n"
