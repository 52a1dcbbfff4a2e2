"""Readers for event logs and catalogs: the native CSV / JSON Lines format, a JSON column mapping for any
other CSV, and presets for public datasets (``training.presets``); the parsing itself is in
``training.tables``.

Anything wrong in the input is a ``DataError`` whose one-line message names the file, the 1-based line (the
CSV header is line 1) and the column. No row is dropped silently: a native file loads completely or not at
all; preset filters follow documented rules and count what they drop in ``EventLog.source`` and in the
``LoadSummary``.

Several inputs: every events path may be a file or a directory, and several paths read as one log in the
order given. A directory means the files directly inside it whose names end in one of the reader's suffixes
(native: .csv .tsv .jsonl .ndjson .json, each optionally .gz; otto: .jsonl .ndjson, optionally .gz), in
name order; hidden files, subdirectories, other names and the ``catalog`` file are not read and are listed
in ``LoadSummary.skipped``. CSV and JSON Lines files may be mixed: both carry the same native columns. The
uci-online-retail and movielens-100k readers read a directory themselves (per-day CSVs; ``u.data``). A file
named twice (directly or through its directory) is an error: its events would count twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec
import numpy as np

from models.dataset import EventLog
from models.domain import CatalogItem, ItemKind, Stage
from models.errors import DataError, EmptyDatasetError, InvalidInputError
from training.presets import PRESETS
from training.tables import (
    EVENT_CODES,
    CellError,
    FileRead,
    RawEvents,
    kind_of,
    merge_catalogs,
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
    unknown_name,
)

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
    delimiter         CSV field separator (default: "," or tab for .tsv; when the default leaves the header
                      as one column, the one of ; tab | that splits it, said in the load summary)
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
    col = {c: mapping.columns.get(c, c) for c in EVENT_COLUMNS}
    try:
        table = read_table(path, label, mapping.delimiter)
        has_event = col["event"] in table.columns
        table.require([col["visitor_id"], col["item_id"], col["timestamp"]])
        if not (has_event or mapping.default_event):
            table.require([col["event"]])
    except DataError:
        hint = _preset_hint(path)
        if hint:
            raise DataError(hint, path=label) from None
        raise
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
        files=[FileRead(path=label, rows=n, format=table.format)],
    )


_MOVIELENS_LINE = re.compile(rb"\d+\t\d+\t\d+\t\d+")


def _preset_hint(path: Path) -> str | None:
    """What to do with a file the native reader refused but a preset reads: MovieLens ratings (4
    tab-separated integers per line, no header)."""
    try:
        head = read_bytes(path, str(path))[:4096].split(b"\n")
    except DataError:
        return None
    first = next((line.strip() for line in head if line.strip()), b"")
    if _MOVIELENS_LINE.fullmatch(first):
        return (
            "looks like MovieLens ratings (user, item, rating, time; tab-separated, no header):"
            " use --preset movielens-100k"
        )
    return None


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
        raise CellError(unknown_name("kind", cell, [k.value for k in ItemKind]))
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
        raise CellError(unknown_name("stage", wrong[0], known, "; several are |-separated"))
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
Paths = str | Path | Sequence[str | Path]


class LoadSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What one load read (``journeyrec train/evaluate`` print it and put it in their JSON).

    reader         "native" or the preset's name
    files          every file read, in reading order, with its data rows
    skipped        directory entries not read (hidden, a subdirectory, another suffix, the catalog file)
    rows           data rows read (sum over ``files``)
    events         events loaded: ``rows`` minus what the preset's rules filtered
    filtered       rows dropped by each preset rule (native files drop none)
    catalog        the catalog file given, and its items (None when none was given)
    detail         the reader's own account (also ``EventLog.source``)
    """

    reader: str
    files: list[FileRead]
    skipped: list[str]
    rows: int
    events: int
    filtered: dict[str, int]
    catalog: str | None
    catalog_items: int | None
    detail: str

    def lines(self, max_files: int = 12) -> list[str]:
        """The summary for a terminal: totals, then one line per file (beyond ``max_files`` files, the
        first ones, a count of the middle ones and the last one; the JSON lists them all)."""
        n = len(self.files)
        why = ", ".join(f"{reason} {count:,}" for reason, count in self.filtered.items())
        filtered = f"filtered {sum(self.filtered.values()):,} ({why})" if why else "filtered none"
        files = f"{n} file{'s' * (n != 1)}"
        out = [f"read {files} ({self.reader}): {self.rows:,} rows -> {self.events:,} events; {filtered}"]

        def line(f: FileRead) -> str:
            return f"  {f.path}: {f.rows:,} rows{f' ({f.format})' if f.format else ''}"

        if n <= max_files:
            out += map(line, self.files)
        else:
            middle = self.files[max_files - 2 : -1]
            out += map(line, self.files[: max_files - 2])
            out.append(f"  and {len(middle):,} more files with {sum(f.rows for f in middle):,} rows, then")
            out.append(line(self.files[-1]))
        if self.skipped:
            more = len(self.skipped) - 5
            shown = ", ".join(self.skipped[:5]) + (f" and {more:,} more" if more > 0 else "")
            out.append(f"  not read: {shown}")
        if self.catalog is not None:
            out.append(f"  catalog {self.catalog}: {self.catalog_items:,} items")
        return out


def _reader(preset: str | None, mapping: ColumnMapping | None) -> str:
    name = preset or "native"
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if PRESETS[name].reader is not None and mapping is not None:
        raise InvalidInputError(f"a column mapping applies to the native format, not to preset {name!r}")
    return name


def _read(path: str | Path, preset: str | None, mapping: ColumnMapping | None) -> RawEvents:
    reader = PRESETS[_reader(preset, mapping)].reader
    if reader is None:
        return read_native(Path(path), str(path), mapping or ColumnMapping())
    return reader(Path(path), str(path))


def _as_list(paths: Paths) -> list[str | Path]:
    return [paths] if isinstance(paths, str | Path) else list(paths)


def expand_paths(
    paths: Paths, reader: str, catalog: str | Path | None = None
) -> tuple[list[Path], list[str]]:
    """(files to read in order, entries not read) for the given paths; see the module docstring."""
    suffixes = PRESETS[reader].directory_files
    given = _as_list(paths)
    if not given:
        raise InvalidInputError("no events path given")
    not_events = {Path(catalog).resolve()} if catalog is not None else set()
    files: list[Path] = []
    skipped: list[str] = []
    origin: dict[Path, Path] = {}  # file (resolved) -> the path given that named it
    for p in map(Path, given):
        picked = [p]  # a file, or a path that is missing (the reader fails naming it)
        if suffixes and p.is_dir():
            picked = []
            for entry in sorted(p.iterdir(), key=lambda e: e.name):
                wanted = entry.is_file() and not entry.name.startswith(".") and kind_of(entry) in suffixes
                if wanted and entry.resolve() not in not_events:
                    picked.append(entry)
                else:
                    skipped.append(str(entry))
            if not picked:
                names = " ".join(f"*{s}" for s in suffixes)
                raise DataError(
                    f"no events files in this directory (read: {names}, each optionally .gz)", path=str(p)
                )
        for f in picked:
            key = f.resolve()
            if key in origin:
                via = f" (through {origin[key]} and {p})" if origin[key] != p else ""
                raise InvalidInputError(f"{f}: named twice{via}; its events would count twice")
            origin[key] = p
        files += picked
    return files, skipped


def _read_all(
    paths: Paths, files: list[Path], preset: str | None, mapping: ColumnMapping | None
) -> RawEvents:
    """Every file's events (``files``: ``paths`` expanded) as one ``RawEvents``."""
    label = " + ".join(map(str, _as_list(paths)))
    return RawEvents.concat([_read(f, preset, mapping) for f in files], label)


def _catalog_of(
    raw: RawEvents, catalog: str | Path | None, mapping: ColumnMapping | None
) -> tuple[list[CatalogItem], int | None]:
    """(the catalog, items in the ``catalog`` file or None without one)."""
    if catalog is None:
        return raw.catalog, None
    given = load_catalog(catalog, mapping)
    raw.source += f"; catalog {catalog}: {len(given):,} items"
    return merge_catalogs(raw.catalog, given), len(given)


def _summary(
    raw: RawEvents, reader: str, skipped: list[str], catalog: str | Path | None, catalog_items: int | None
) -> LoadSummary:
    return LoadSummary(
        reader=reader,
        files=[f if f.format else msgspec.structs.replace(f, format=reader) for f in raw.files],
        skipped=skipped,
        rows=sum(f.rows for f in raw.files),
        events=len(raw.visitor),
        filtered=raw.filtered,
        catalog=None if catalog is None else str(catalog),
        catalog_items=catalog_items,
        detail=raw.source,
    )


def read_events(
    paths: Paths,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> tuple[EventLog, LoadSummary]:
    """Read events files and directories (see the module docstring) and an optional catalog into one
    ``EventLog``, and say what was read.

    A ``catalog`` file's entries replace the ones a preset derives; among several events files, a later
    file's derived entry replaces an earlier one's. ``EventLog.source`` is ``LoadSummary.detail``.
    """
    reader = _reader(preset, mapping)
    files, skipped = expand_paths(paths, reader, catalog)
    raw = _read_all(paths, files, preset, mapping)
    cat, n_catalog = _catalog_of(raw, catalog, mapping)
    log = EventLog.build(**raw.columns(), catalog=cat, visitor_features=raw.features, source=raw.source)
    return log, _summary(raw, reader, skipped, catalog, n_catalog)


def load_events(
    paths: Paths,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> EventLog:
    """``read_events`` without the summary."""
    return read_events(paths, catalog=catalog, preset=preset, mapping=mapping)[0]


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


def read_train_test(
    train: Paths,
    test: Paths,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> tuple[EventLog, EventLog, LoadSummary, LoadSummary]:
    """Two inputs as two logs of one id space: both share ``visitor_ids`` and ``catalog`` (the same
    objects), with a summary each (the catalog is counted in the training one).

    Derived catalog entries and visitor features come from both inputs; for an item in both, the training
    input's entry wins. Each input may be several files and directories, as in ``read_events``.
    """
    reader = _reader(preset, mapping)
    (files_a, skip_a), (files_b, skip_b) = (expand_paths(p, reader, catalog) for p in (train, test))
    shared = {f.resolve() for f in files_a} & {f.resolve() for f in files_b}
    if shared:
        name = next(f for f in files_b if f.resolve() in shared)
        raise InvalidInputError(f"{name}: read as training and as test events; a file belongs to one of them")
    a, b = _read_all(train, files_a, preset, mapping), _read_all(test, files_b, preset, mapping)
    both = RawEvents.concat([a, b], f"{a.path} + {b.path}")
    both.catalog = merge_catalogs(b.catalog, a.catalog)
    both.source = f"train {a.source}; test {b.source}"
    cat, n_catalog = _catalog_of(both, catalog, mapping)
    full = EventLog.build(**both.columns(), catalog=cat, visitor_features=both.features, source=both.source)
    return (
        _in_space(full, a),
        _in_space(full, b),
        _summary(a, reader, skip_a, catalog, n_catalog),
        _summary(b, reader, skip_b, None, None),
    )


def load_train_test(
    train: Paths,
    test: Paths,
    *,
    catalog: str | Path | None = None,
    preset: str | None = None,
    mapping: ColumnMapping | None = None,
) -> tuple[EventLog, EventLog]:
    """``read_train_test`` without the summaries."""
    a, b, _, _ = read_train_test(train, test, catalog=catalog, preset=preset, mapping=mapping)
    return a, b


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
                fail(f"{key}: {unknown_name('native column', name, allowed)}")
    events = list(EVENT_CODES)
    for theirs, ours in m.events.items():
        if ours not in EVENT_CODES:
            fail(f"events: {theirs!r} maps to {unknown_name('event', ours, events)}")
    if m.default_event is not None and m.default_event not in EVENT_CODES:
        fail(f"default_event: {unknown_name('event', m.default_event, events)}")
    if m.delimiter is not None and len(m.delimiter) != 1:
        fail(f"delimiter: expected one character, got {m.delimiter!r}")
    fmt = m.timestamp_format
    if fmt is not None and fmt not in _TIME_FORMATS and "%" not in fmt:
        fail(f"timestamp_format: expected unix, unix_ms, iso or a strptime format like %Y-%m-%d, got {fmt!r}")
    return m
