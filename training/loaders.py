"""Readers for event logs and catalogs: the native CSV / JSON Lines format, a JSON column mapping for any
other CSV, and presets for public datasets (``training.presets``); the parsing itself is in
``training.tables``.

Anything wrong in the input is a ``DataError`` whose one-line message names the file, the 1-based line (the
CSV header is line 1) and the column. No row is dropped silently: a native file loads completely or not at
all; preset filters follow documented rules and count what they drop in ``EventLog.source``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec
import numpy as np

from models.dataset import EventLog
from models.domain import CatalogItem, ItemKind, Stage
from models.errors import DataError, EmptyDatasetError, ValidationError
from training.presets import READERS
from training.tables import (
    EVENT_CODES,
    CellError,
    RawEvents,
    merge_catalogs,
    merge_features,
    one_line,
    parse_channels,
    parse_events,
    parse_ids,
    parse_numbers,
    parse_sessions,
    parse_timestamps,
    read_bytes,
    read_table,
    token_features,
)

#: Preset name -> what it reads ("native" here, the others in ``training.presets``).
PRESETS: dict[str, str] = {
    "native": "native CSV / JSON Lines events (the default)",
    "uci-online-retail": "UCI Online Retail invoice lines (directory of per-day CSVs or one CSV)",
    "movielens-100k": "MovieLens 100K ratings (u.data or a split such as ua.base; u.item/u.user beside it)",
    "otto": "OTTO session JSON Lines (clicks, carts, orders)",
}

EVENT_COLUMNS = (
    "visitor_id", "item_id", "event", "timestamp", "session_id", "channel", "quantity", "value", "country",
)  # fmt: skip
CATALOG_COLUMNS = (
    "item_id", "kind", "title", "category", "price", "tags", "stages", "in_stock", "repeatable",
)  # fmt: skip
_TIME_FORMATS = ("unix", "unix_ms", "iso")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class ColumnMapping(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a foreign events file maps onto the native format (``load_mapping`` reads it from JSON).

    columns           native column name -> the file's column (unlisted columns keep their native name)
    events            the file's event name -> native event name (an ``EventType`` value)
    timestamp_format  None: ISO-8601 or POSIX seconds; "unix", "unix_ms", "iso" or a ``strptime`` format
                      (times without an offset are UTC)
    default_event     native event for rows without one (or for every row when there is no event column)
    delimiter         CSV field separator (default: "," or tab for .tsv)
    catalog_columns   native catalog column name -> the catalog file's column
    """

    columns: dict[str, str] = {}
    events: dict[str, str] = {}
    timestamp_format: str | None = None
    default_event: str | None = None
    delimiter: str | None = None
    catalog_columns: dict[str, str] = {}


# -- native format --------------------------------------------------------------------------------------
def read_native(path: Path, label: str, mapping: ColumnMapping) -> RawEvents:
    """Native events: visitor_id, item_id, event, timestamp and optional session_id, channel, quantity, value,
    country (names as renamed by ``mapping``). Empty optional cells mean unknown: session and channel -1,
    quantity 1, value NaN, no country feature."""
    table = read_table(path, label, mapping.delimiter)
    col = {c: mapping.columns.get(c, c) for c in EVENT_COLUMNS}
    has_event = col["event"] in table.columns
    table.require([col["visitor_id"], col["item_id"], col["timestamp"]])
    if not (has_event or mapping.default_event):
        table.require([col["event"]])
    if table.n == 0:
        raise EmptyDatasetError("no events, only a header", path=label)
    visitor = parse_ids(table, col["visitor_id"])
    n = table.n
    optional = {c: col[c] for c in ("session_id", "channel", "quantity", "value", "country")}
    present = {c: name for c, name in optional.items() if name in table.columns}
    default_code = EVENT_CODES[mapping.default_event] if mapping.default_event else -1
    return RawEvents(
        path=label,
        visitor=visitor,
        item=parse_ids(table, col["item_id"]),
        event=(
            parse_events(table, col["event"], mapping.events, mapping.default_event)
            if has_event
            else np.full(n, default_code, np.int8)
        ),
        ts=parse_timestamps(table, col["timestamp"], mapping.timestamp_format),
        session=parse_sessions(table, present["session_id"]) if "session_id" in present else None,
        channel=parse_channels(table, present["channel"]) if "channel" in present else None,
        quantity=parse_numbers(table, present["quantity"], 1.0, positive=True)
        if "quantity" in present
        else None,
        value=parse_numbers(table, present["value"], np.nan) if "value" in present else None,
        features=(
            token_features(table.columns[col["visitor_id"]], table.columns[present["country"]], "country")
            if "country" in present
            else {}
        ),
        source=f"native {label}: {n:,} events",
    )


def _flag(cell: str, default: bool) -> bool:
    s = cell.strip().lower()
    if not s:
        return default
    if s not in _BOOLS:
        raise CellError(f"expected true/false, 1/0 or yes/no, got {cell!r}")
    return _BOOLS[s]


def _split(cell: str) -> list[str]:
    return [p.strip() for p in cell.split("|") if p.strip()]


def _kind_of(cell: str) -> ItemKind:
    name = cell.strip().lower() or "product"
    if name not in {k.value for k in ItemKind}:
        raise CellError(f"expected product or content, got {cell!r}")
    return ItemKind(name)


def _price(cell: str) -> float | None:
    if not cell.strip():
        return None
    try:
        price = float(cell)
    except ValueError:
        price = np.nan
    if not (np.isfinite(price) and price >= 0):
        raise CellError(f"expected a price >= 0 or an empty cell, got {cell!r}")
    return price


def _stages(cell: str) -> tuple[Stage, ...]:
    names = [s.lower() for s in _split(cell)]
    known = [s.value for s in Stage]
    wrong = [s for s in names if s not in known]
    if wrong:
        raise CellError(f"unknown stage {wrong[0]!r}, expected |-separated stages from: {', '.join(known)}")
    return tuple(Stage(s) for s in names)


def load_catalog(path: str | Path, mapping: ColumnMapping | None = None) -> list[CatalogItem]:
    """Catalog rows (CSV or JSON Lines) as ``CatalogItem``s, in file order; duplicate ids are an error."""
    label, cmap = str(path), (mapping.catalog_columns if mapping else {})
    table = read_table(Path(path), label, mapping.delimiter if mapping else None, lists=True)
    col = {c: cmap.get(c, c) for c in CATALOG_COLUMNS}
    table.require([col["item_id"]])
    ids = parse_ids(table, col["item_id"]).tolist()
    first: dict[str, int] = {}
    items = []
    for row, item_id in enumerate(ids):
        if item_id in first:
            line = table.where(first[item_id])[1]
            table.fail(row, col["item_id"], f"duplicate item id {item_id!r} (first on line {line})")
        first[item_id] = row

        def get(name: str, row: int = row) -> str:
            cells = table.columns.get(col[name])
            return cells[row] if cells is not None else ""

        def check(name: str, convert: Callable[[str], Any], row: int = row) -> Any:
            try:
                return convert(get(name))
            except CellError as e:
                table.fail(row, col[name], str(e))

        items.append(
            CatalogItem(
                item_id=item_id,
                kind=check("kind", _kind_of),
                title=get("title").strip(),
                category=get("category").strip(),
                price=check("price", _price),
                tags=tuple(_split(get("tags"))),
                stages=check("stages", _stages),
                in_stock=check("in_stock", lambda c: _flag(c, True)),
                repeatable=check("repeatable", lambda c: _flag(c, False)),
            )
        )
    return items


# -- public API -----------------------------------------------------------------------------------------
def _read(path: str | Path, preset: str | None, mapping: ColumnMapping | None) -> RawEvents:
    name = preset or "native"
    if name not in PRESETS:
        raise ValidationError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if name == "native":
        return read_native(Path(path), str(path), mapping or ColumnMapping())
    if mapping is not None:
        raise ValidationError(f"a column mapping applies to the native format, not to preset {name!r}")
    return READERS[name](Path(path), str(path))


def _catalog_of(
    raw: RawEvents, catalog: str | Path | None, mapping: ColumnMapping | None
) -> list[CatalogItem]:
    if catalog is None:
        return raw.catalog
    given = load_catalog(catalog, mapping)
    raw.source += f"; catalog {catalog}: {len(given):,} items"
    return merge_catalogs(raw.catalog, given)


def load_events(
    path: str | Path,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> EventLog:
    """Read one events file (or a preset's file/directory) and an optional catalog into an ``EventLog``.

    A ``catalog`` file's entries replace the ones a preset derives. ``EventLog.source`` says what was read
    and, for presets, how many rows their rules filtered.
    """
    raw = _read(path, preset, mapping)
    cat = _catalog_of(raw, catalog, mapping)
    return EventLog.build(**raw.columns(), catalog=cat, visitor_features=raw.features, source=raw.source)


def _in_space(full: EventLog, raw: RawEvents) -> EventLog:
    """``raw``'s events as a log over ``full``'s ids and catalog (the same list objects)."""

    def index(ids: np.ndarray, names: list[str]) -> np.ndarray:
        pos = {name: i for i, name in enumerate(names)}
        uniq, inverse = np.unique(ids, return_inverse=True)
        return np.array([pos[u] for u in uniq.tolist()], dtype=np.int32)[inverse.reshape(-1)]

    return EventLog(
        visitor_ids=full.visitor_ids,
        catalog=full.catalog,
        visitor=index(raw.visitor, full.visitor_ids),
        item=index(raw.item, full.item_ids),
        event=raw.event.astype(np.int8),
        ts=raw.ts.astype(np.float64),
        session=cast(np.ndarray, raw.session),
        channel=cast(np.ndarray, raw.channel),
        quantity=cast(np.ndarray, raw.quantity),
        value=cast(np.ndarray, raw.value),
        visitor_features=full.visitor_features,
        source=full.source,
    ).sorted()


def load_train_test(
    train: str | Path,
    test: str | Path,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> tuple[EventLog, EventLog]:
    """Two files as two logs of one id space: both share ``visitor_ids`` and ``catalog`` (the same objects).

    Derived catalog entries and visitor features come from both files; for an item in both, the training
    file's entry wins.
    """
    a, b = _read(train, preset, mapping), _read(test, preset, mapping)
    both = RawEvents(
        path=f"{train} + {test}",
        visitor=np.concatenate([a.visitor, b.visitor]),
        item=np.concatenate([a.item, b.item]),
        event=np.concatenate([a.event, b.event]),
        ts=np.concatenate([a.ts, b.ts]),
        session=np.concatenate([cast(np.ndarray, a.session), cast(np.ndarray, b.session)]),
        channel=np.concatenate([cast(np.ndarray, a.channel), cast(np.ndarray, b.channel)]),
        quantity=np.concatenate([cast(np.ndarray, a.quantity), cast(np.ndarray, b.quantity)]),
        value=np.concatenate([cast(np.ndarray, a.value), cast(np.ndarray, b.value)]),
        catalog=merge_catalogs(b.catalog, a.catalog),
        features=merge_features(a.features, b.features),
        source=f"train {a.source}; test {b.source}",
    )
    cat = _catalog_of(both, catalog, mapping)
    full = EventLog.build(**both.columns(), catalog=cat, visitor_features=both.features, source=both.source)
    return _in_space(full, a), _in_space(full, b)


def load_mapping(path: str | Path) -> ColumnMapping:
    """A ``ColumnMapping`` from a JSON file; unknown keys, columns or event names are a DataError."""
    label = str(path)
    data = read_bytes(Path(path), label)
    keys = ", ".join(ColumnMapping.__struct_fields__)
    try:
        m = msgspec.json.decode(data, type=ColumnMapping)
    except msgspec.ValidationError as e:
        raise DataError(f"{one_line(e)} (expected keys: {keys})", path=label) from None
    except msgspec.DecodeError as e:
        at = re.search(r"\(byte (\d+)\)", str(e))
        line = data[: int(at.group(1))].count(b"\n") + 1 if at else None
        raise DataError(f"invalid JSON: {one_line(e)}", path=label, line=line) from None

    def fail(message: str) -> NoReturn:
        raise DataError(message, path=label)

    for key, allowed in (("columns", EVENT_COLUMNS), ("catalog_columns", CATALOG_COLUMNS)):
        for name in getattr(m, key):
            if name not in allowed:
                fail(f"{key}: unknown native column {name!r}, expected some of: {', '.join(allowed)}")
    known = ", ".join(EVENT_CODES)
    for theirs, ours in m.events.items():
        if ours not in EVENT_CODES:
            fail(f"events: {theirs!r} maps to unknown event {ours!r}, expected one of: {known}")
    if m.default_event is not None and m.default_event not in EVENT_CODES:
        fail(f"default_event: unknown event {m.default_event!r}, expected one of: {', '.join(EVENT_CODES)}")
    if m.delimiter is not None and len(m.delimiter) != 1:
        fail(f"delimiter: expected one character, got {m.delimiter!r}")
    fmt = m.timestamp_format
    if fmt is not None and fmt not in _TIME_FORMATS and "%" not in fmt:
        fail(f"timestamp_format: expected unix, unix_ms, iso or a strptime format like %Y-%m-%d, got {fmt!r}")
    return m
