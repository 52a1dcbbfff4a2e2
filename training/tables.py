"""Columnar parsing shared by the loaders and presets: files to string cells, cells to numpy arrays.

A ``Table`` holds one or more files' cells column by column and knows each row's file and 1-based line, so
any converter can fail with a ``DataError`` naming file, line and column. Converters take the numpy fast
path first and fall back to converting each distinct cell in Python, which also finds the row to blame.
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import difflib
import gzip
import hashlib
import io
import re
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, NoReturn, cast

import msgspec
import numpy as np

from models.dataset import CHANNELS
from models.domain import CatalogItem, EventType
from models.errors import DataError, EmptyDatasetError

EVENT_CODES: dict[str, int] = {e.value: e.code for e in EventType}
_CHANNEL_CODES: dict[str, int] = {c.value: i for i, c in enumerate(CHANNELS)}
_MAX_TS = 4_102_444_800.0  # 2100-01-01: later "seconds" are almost always milliseconds


class CellError(ValueError):
    """A cell converter's complaint; the caller turns it into a DataError at the first row holding it."""


def one_line(error: object) -> str:
    """An exception's text fit for a one-line message (data echoed inside it may hold newlines)."""
    return " ".join(str(error).splitlines())


def did_you_mean(value: str, valid: Sequence[str]) -> str | None:
    """The valid name closest to ``value`` (case, "-" and spaces read as "_"; difflib's ratio >= 0.6)."""
    name = re.sub(r"[\s-]+", "_", value.strip().lower())
    if name in valid:
        return name
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_name(what: str, value: str, valid: Sequence[str], also: str = "") -> str:
    """ "unknown event 'add-to-cart' (expected one of: page_view, ...); did you mean add_to_cart?"."""
    shown = repr(value) if value.strip() else "an empty cell"
    close = did_you_mean(value, valid) if value.strip() else None
    hint = f"; did you mean {close}?" if close else ""
    return f"unknown {what} {shown} (expected one of: {', '.join(valid)}{also}){hint}"


# -- raw files --------------------------------------------------------------------------------------
def read_bytes(path: Path, label: str) -> bytes:
    """The file's bytes (gunzipped for ``.gz``); a DataError naming ``label`` when it cannot be read."""
    if not path.exists():
        raise DataError("file not found", path=label)
    if path.is_dir():
        raise DataError("is a directory, expected a file", path=label)
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix.lower() == ".gz" else data
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"not a readable gzip file ({one_line(e)})", path=label) from None
    except OSError as e:
        raise DataError(f"cannot read: {e.strerror or e}", path=label) from None


def read_text(path: Path, label: str, encoding: str = "utf-8-sig") -> str:
    data = read_bytes(path, label)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            f"not {encoding.removesuffix('-sig')} text (byte {data[e.start]:#04x})", path=label, line=line
        ) from None


def kind_of(path: Path) -> str:
    """The format suffix, ignoring ``.gz``: ".csv", ".jsonl", ..."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


@dataclass
class _Part:
    path: str
    start: int  # first table row of this file
    line: Callable[[int], int]  # row within the file -> 1-based line


@dataclass
class Table:
    """String cells of one or more files, column by column (``columns[name][row]``, ``n`` rows)."""

    header: list[str]
    columns: dict[str, Sequence[str]]
    n: int
    parts: list[_Part] = field(default_factory=list)
    format: str = ""  # what was read: "csv", "csv (';' detected)", "jsonl", ...

    def where(self, row: int) -> tuple[str, int]:
        """(file, line) of table row ``row``."""
        k = bisect.bisect_right([p.start for p in self.parts], row) - 1
        part = self.parts[k]
        return part.path, part.line(row - part.start)

    def fail(self, row: int, column: str | None, message: str) -> NoReturn:
        path, line = self.where(row)
        raise DataError(message, path=path, line=line, column=column)

    def require(self, names: Sequence[str]) -> None:
        for name in names:
            if name not in self.columns:
                shown = [h if h.isprintable() else repr(h) for h in self.header[:30]]
                found = ", ".join(shown + ["..."] * (len(self.header) > 30)) or "no columns"
                raise DataError(f"missing column {name!r} (found: {found})", path=self.parts[0].path)

    def check_widths(self, widths: np.ndarray, expected: int, fields: str) -> None:
        """``widths``: int64[n] fields per row; the first row without ``expected`` fields fails."""
        bad = np.flatnonzero(widths != expected)
        if bad.size:
            row = int(bad[0])
            self.fail(row, None, f"expected {expected} {fields}, got {widths[row]}")

    @classmethod
    def from_rows(
        cls, label: str, header: list[str], rows: list[list[str]], line: Callable[[int], int], fields: str
    ) -> Table:
        """One file's split ``rows`` (each needs all fields); ``line(row)`` gives a row's 1-based line."""
        table = cls(header=header, columns={}, n=len(rows), parts=[_Part(label, 0, line)])
        table.check_widths(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), len(header), fields)
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
        table.columns = dict(zip(header, cols, strict=True))
        return table

    @classmethod
    def concat(cls, tables: Sequence[Table]) -> Table:
        """Rows of all ``tables`` in order; a column missing from some files reads as empty cells there."""
        names = list(dict.fromkeys(n for t in tables for n in t.header))
        columns: dict[str, Sequence[str]] = {
            n: [c for t in tables for c in t.columns.get(n, ("",) * t.n)] for n in names
        }
        parts, start = [], 0
        for t in tables:
            parts += [_Part(p.path, start + p.start, p.line) for p in t.parts]
            start += t.n
        return cls(header=names, columns=columns, n=start, parts=parts)


def _header(cells: list[str], label: str) -> list[str]:
    header = [h.strip() for h in cells]
    if not any(header):
        raise EmptyDatasetError("empty file, expected a header row", path=label)
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"duplicate column {dupes[0]!r} in the header", path=label, line=1)
    return header


def _read_plain(text: str, label: str, delimiter: str) -> Table | None:
    """Fast path for text without quotes or blank lines (what machines write): str.split at C speed."""
    lines = text.rstrip("\n").split("\n")
    if "" in lines:
        return None
    header = _header(lines[0].split(delimiter), label)
    body = lines[1:]
    table = Table(header=header, columns={}, n=len(body), parts=[_Part(label, 0, lambda row: row + 2)])
    widths = np.fromiter(map(str.count, body, repeat(delimiter)), dtype=np.int64, count=len(body)) + 1
    table.check_widths(widths, len(header), "fields as in the header")
    rest = "\n".join(body)
    cells = rest.replace("\n", delimiter).split(delimiter) if body else []
    table.columns = {name: cells[k :: len(header)] for k, name in enumerate(header)}
    return table


def _read_quoted(text: str, label: str, delimiter: str) -> Table:
    """The csv module's reading: quoted fields may hold delimiters and newlines; blank lines are skipped."""

    def records() -> Iterator[tuple[int, list[str]]]:  # (first line, fields) of each non-blank record
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        start = 1
        try:
            for fields in reader:
                if fields:
                    yield start, fields
                start = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"malformed CSV: {one_line(e)}", path=label, line=reader.line_num) from None

    it = records()
    header = _header(next(it, (1, []))[1], label)
    rows = [fields for _, fields in it]

    def line_of(row: int) -> int:  # re-scan on error only
        return next(line for k, (line, _) in enumerate(records()) if k == row + 1)

    return Table.from_rows(label, header, rows, line_of, "fields as in the header")


_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tabs", "|": "'|'"}


def _delimiter(text: str, label: str, given: str | None, default: str) -> tuple[str, bool]:
    """(delimiter, detected) for a file whose header is the first line of ``text``.

    A header that the given (or default) delimiter leaves as one column cannot hold the required columns:
    without a given delimiter the one of , ; tab | that splits it into the most columns is used instead
    (detected); with a given one, or when two candidates tie, the error names what the header looks like.
    """
    head = text.lstrip("\n").split("\n", 1)[0]
    widths = {d: len(head.split(d)) for d in _DELIMITERS}
    most = max(widths.values())
    wanted = given or default
    if widths.get(wanted, len(head.split(wanted))) > 1 or most == 1:
        return wanted, False
    best = [d for d in _DELIMITERS if widths[d] == most]
    setting = 'a --mapping file with "delimiter": "{}"'
    if given or len(best) > 1:
        looks = " or ".join(_DELIMITER_NAMES[d] for d in best)
        choose = setting.format(msgspec.json.encode(best[0]).decode()[1:-1])
        why = f"not {_DELIMITER_NAMES.get(given, repr(given))}" if given else "cannot tell which"
        raise DataError(f"the header looks separated by {looks} ({why}): use {choose}", path=label, line=1)
    return best[0], True


def read_csv(path: Path, label: str, delimiter: str | None = None, default: str = ",") -> Table:
    """A delimited file with a header row (line 1); blank lines are skipped, other rows need all fields.

    ``delimiter`` None: ``default``, or the one ``_delimiter`` detects when ``default`` leaves the header
    as one column (``Table.format`` then says so).
    """
    text = read_text(path, label)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    sep, detected = _delimiter(text, label, delimiter, default)
    plain = '"' not in text and "\r" not in text
    table = (_read_plain(text, label, sep) if plain else None) or _read_quoted(text, label, sep)
    kind = "tsv" if default == "\t" else "csv"
    table.format = f"{kind} ({_DELIMITER_NAMES.get(sep, repr(sep))} detected)" if detected else kind
    return table


def _json_cell(value: Any, lists: bool) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if lists and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "|".join(value)
    raise CellError(f"expected a string or number, got {type(value).__name__}")


def read_jsonl(path: Path, label: str, lists: bool = False) -> Table:
    """One JSON object per line; values become strings (``lists``: string lists join with "|")."""
    data = read_bytes(path, label)
    body = data.lstrip()
    if body[:1] == b"[":
        line = data[: len(data) - len(body)].count(b"\n") + 1
        raise DataError(
            "expected JSON Lines (one object per line), found a JSON array", path=label, line=line
        )
    decode = msgspec.json.Decoder().decode
    records: list[dict[str, Any]] = []
    lines: list[int] = []
    for i, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            obj = decode(raw)
        except msgspec.DecodeError as e:
            raise DataError(f"invalid JSON: {one_line(e)}", path=label, line=i) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=label, line=i)
        records.append(obj)
        lines.append(i)
    if not records:
        raise EmptyDatasetError("no JSON objects in the file", path=label)
    header = list(dict.fromkeys(k for r in records for k in r))
    table = Table(
        header=header, columns={}, n=len(records), parts=[_Part(label, 0, lines.__getitem__)], format="jsonl"
    )
    for name in header:
        cells = [r.get(name) for r in records]
        if {type(c) for c in cells} != {str}:
            for row, c in enumerate(cells):
                try:
                    cells[row] = _json_cell(c, lists)
                except CellError as e:
                    table.fail(row, name, str(e))
        table.columns[name] = cast(list[str], cells)
    return table


def read_table(path: Path, label: str, delimiter: str | None = None, lists: bool = False) -> Table:
    """CSV (.csv, .tsv) or JSON Lines (.jsonl, .ndjson, .json), each optionally gzipped."""
    if not path.is_file():
        read_bytes(path, label)  # says "not found" or "a directory" before judging the suffix
    kind = kind_of(path)
    if kind in (".csv", ".tsv"):
        return read_csv(path, label, delimiter, "\t" if kind == ".tsv" else ",")
    if kind in (".jsonl", ".ndjson", ".json"):
        return read_jsonl(path, label, lists)
    raise DataError(
        f"unknown file type {kind or '(none)'!r}, expected .csv, .tsv, .jsonl or .json", path=label
    )


# -- column converters ------------------------------------------------------------------------------
def map_distinct(table: Table, column: str, convert: Callable[[str], Any], dtype: Any) -> np.ndarray:
    """``convert`` applied once per distinct cell; a ``CellError`` fails at the first row holding it."""
    cells = table.columns[column]
    lookup: dict[str, Any] = {}
    bad: dict[str, str] = {}
    for cell in set(cells):
        try:
            lookup[cell] = convert(cell)
        except CellError as e:
            bad[cell] = str(e)
    if bad:
        row = next(i for i, c in enumerate(cells) if c in bad)
        table.fail(row, column, bad[cells[row]])
    return np.fromiter(map(lookup.__getitem__, cells), dtype=dtype, count=len(cells))


def _shown(cell: str) -> str:
    return repr(cell) if cell.strip() else "an empty cell"


def parse_ids(table: Table, column: str) -> np.ndarray:
    """str[n] ids; empty cells are an error."""
    cells = table.columns[column]
    if any(not c.strip() for c in set(cells)):
        row = next(i for i, c in enumerate(cells) if not c.strip())
        table.fail(row, column, "expected an id, got an empty cell")
    return np.asarray(cells, dtype=str)


def _time_of(cell: str, fmt: str | None, extra: Sequence[str]) -> float:
    s = cell.strip()
    expected = {
        None: "expected ISO-8601 or POSIX seconds",
        "unix": "expected POSIX seconds",
        "unix_ms": "expected POSIX milliseconds",
        "iso": "expected ISO-8601",
    }.get(fmt, f"expected a time like {fmt!r}")
    if fmt in (None, "unix", "unix_ms"):
        try:
            return float(s) / (1000.0 if fmt == "unix_ms" else 1.0)
        except ValueError:
            if fmt is not None:
                raise CellError(f"{expected}, got {_shown(cell)}") from None
    t = None
    for f in ("iso" if fmt in (None, "iso") else fmt, *extra):
        try:
            t = dt.datetime.fromisoformat(s) if f == "iso" else dt.datetime.strptime(s, f)  # noqa: DTZ007
            break
        except ValueError:
            continue
    if t is None:
        raise CellError(f"{expected}, got {_shown(cell)}")
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def _iso_fast(cells: Sequence[str]) -> np.ndarray | None:
    """float64 seconds via numpy's ISO parser, or None when any cell needs the careful path."""
    plain = np.array([c[:-1] if c[-1:] in ("Z", "z") else c for c in cells])
    # numpy also reads "now", "today" and bare numbers (as years): only cells starting with a digit go fast
    first = plain.view(np.uint32).reshape(len(plain), -1)[:, 0]
    if ((first < ord("0")) | (first > ord("9"))).any():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns about UTC offsets: take the careful path
        try:
            t = plain.astype("datetime64[us]")
        except (ValueError, Warning):
            return None
    secs = t.astype(np.int64) / 1e6
    return None if np.isnat(t).any() or ((secs < 0) | (secs >= _MAX_TS)).any() else secs


def parse_timestamps(
    table: Table, column: str, fmt: str | None = None, extra_formats: Sequence[str] = ()
) -> np.ndarray:
    """float64[n] POSIX seconds (UTC); see ``ColumnMapping.timestamp_format`` for ``fmt``."""
    cells = table.columns[column]
    ts: np.ndarray | None = None
    if fmt in (None, "unix", "unix_ms"):
        try:
            ts = np.array(cells, dtype=np.float64) / (1000.0 if fmt == "unix_ms" else 1.0)
        except ValueError:
            ts = None
    if ts is None and fmt in (None, "iso"):
        ts = _iso_fast(cells)
    if ts is None or not np.isfinite(ts).all():
        ts = map_distinct(table, column, lambda c: _time_of(c, fmt, extra_formats), np.float64)
    out = np.flatnonzero(~np.isfinite(ts) | (ts < 0) | (ts >= _MAX_TS))
    if out.size:
        row = int(out[0])
        hint = "; milliseconds? set timestamp_format 'unix_ms' in a --mapping" if ts[row] >= _MAX_TS else ""
        table.fail(row, column, f"expected a time between 1970 and 2100, got {cells[row]!r}{hint}")
    return ts


def parse_numbers(table: Table, column: str, default: float | None, positive: bool = False) -> np.ndarray:
    """float64[n]; empty cells read as ``default`` (None: an error); ``positive`` rejects values <= 0."""
    cells = table.columns[column]
    try:
        x = np.array(cells, dtype=np.float64)
        fast = bool(np.isfinite(x).all())
    except ValueError:
        fast = False
    if not fast:

        def number(cell: str) -> float:
            if not cell.strip() and default is not None:
                return default
            try:
                v = float(cell)
            except ValueError:
                v = np.nan
            if not np.isfinite(v):
                raise CellError(f"expected a number, got {_shown(cell)}")
            return v

        x = map_distinct(table, column, number, np.float64)
    if positive and (x <= 0).any():
        row = int(np.flatnonzero(x <= 0)[0])
        table.fail(row, column, f"expected a positive number, got {cells[row]!r}")
    return x


def session_keys(ids: Sequence[str]) -> np.ndarray:
    """int64[len(ids)] stable non-negative keys: blake2b-64 of each UTF-8 id (not Python's salted hash)."""
    digests = b"".join(hashlib.blake2b(i.encode(), digest_size=8).digest() for i in ids)
    return (np.frombuffer(digests, dtype=">u8") & np.uint64(0x7FFF_FFFF_FFFF_FFFF)).astype(np.int64)


def parse_sessions(table: Table, column: str) -> np.ndarray:
    """int64[n] session keys (``session_keys`` of the cell); -1 for empty cells."""
    cells = table.columns[column]
    distinct = list(set(cells))
    keys = dict(zip(distinct, session_keys(distinct).tolist(), strict=True))
    keys.update((c, -1) for c in distinct if not c.strip())
    return np.fromiter(map(keys.__getitem__, cells), dtype=np.int64, count=len(cells))


def parse_events(
    table: Table, column: str, renames: dict[str, str] | None = None, default: str | None = None
) -> np.ndarray:
    """int8[n] ``EventType.code``; ``renames`` maps the file's names to native ones."""
    renames = renames or {}
    also = ", or a name from the mapping's 'events'" if renames else ""

    def code(cell: str) -> int:
        name = cell.strip()
        name = renames.get(name, name.lower()) if name else (default or "")
        if name not in EVENT_CODES:
            raise CellError(unknown_name("event", cell, list(EVENT_CODES), also))
        return EVENT_CODES[name]

    return map_distinct(table, column, code, np.int8)


def parse_channels(table: Table, column: str) -> np.ndarray:
    """int8[n] index into ``CHANNELS``; -1 for empty cells."""

    def code(cell: str) -> int:
        name = cell.strip().lower()
        if name and name not in _CHANNEL_CODES:
            raise CellError(unknown_name("channel", cell, list(_CHANNEL_CODES), " or an empty cell"))
        return _CHANNEL_CODES[name] if name else -1

    return map_distinct(table, column, code, np.int8)


def token_features(visitor: Sequence[str], cells: Sequence[str], prefix: str) -> dict[str, list[str]]:
    """visitor id -> sorted distinct ``prefix:<lowercased cell>`` tokens (empty cells give none)."""
    feats: dict[str, list[str]] = {}
    # distinct pairs as joined strings: far cheaper than a set of 1M tuples
    for pair in sorted(set(map("\x1f".join, zip(visitor, cells, strict=True)))):
        v, _, c = pair.rpartition("\x1f")
        if c.strip():
            feats.setdefault(v, []).append(f"{prefix}:{c.strip().lower()}")
    return feats


# -- events before ids are made dense -------------------------------------------------------------------
class FileRead(msgspec.Struct, frozen=True, kw_only=True):
    """One file a load read: its path, its data rows (before any preset rule) and how it was read
    ("csv", "csv (';' detected)", "jsonl", ...; empty when a preset's reader does not say)."""

    path: str
    rows: int
    format: str = ""


_EVENT_ARRAYS = ("visitor", "item", "event", "ts", "session", "channel", "quantity", "value")


@dataclass
class RawEvents:
    """Parsed events of one input, one entry per event (n rows), before ``EventLog.build``.

    visitor, item  str[n] ids;  event int8[n];  ts float64[n] POSIX seconds;  session int64[n] (-1 unknown)
    channel int8[n] (-1 unknown);  quantity float32[n];  value float32[n] (NaN unknown)
    """

    path: str
    visitor: np.ndarray
    item: np.ndarray
    event: np.ndarray
    ts: np.ndarray
    session: np.ndarray | None = None
    channel: np.ndarray | None = None
    quantity: np.ndarray | None = None
    value: np.ndarray | None = None
    catalog: list[CatalogItem] = field(default_factory=list)
    features: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    filtered: dict[str, int] = field(default_factory=dict)  # rows a preset's rules dropped, by rule
    files: list[FileRead] = field(default_factory=list)  # default: one file, ``path``, with every row

    def __post_init__(self) -> None:
        n = len(self.visitor)
        if n == 0:
            raise EmptyDatasetError(f"no events ({self.source or 'nothing to load'})", path=self.path)
        if not self.files:
            self.files = [FileRead(path=self.path, rows=n + sum(self.filtered.values()))]
        self.session = np.full(n, -1, np.int64) if self.session is None else self.session.astype(np.int64)
        self.channel = np.full(n, -1, np.int8) if self.channel is None else self.channel.astype(np.int8)
        self.quantity = np.ones(n, np.float32) if self.quantity is None else self.quantity.astype(np.float32)
        self.value = np.full(n, np.nan, np.float32) if self.value is None else self.value.astype(np.float32)

    @classmethod
    def concat(cls, parts: Sequence[RawEvents], path: str) -> RawEvents:
        """Every part's events in order; catalogs merge (a later part's entry wins), so do features."""
        if len(parts) == 1:
            return parts[0]

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        filtered: Counter[str] = Counter()
        for p in parts:
            filtered.update(p.filtered)
        return cls(
            path=path,
            **{name: joined(name) for name in _EVENT_ARRAYS},
            catalog=merge_catalogs(*(p.catalog for p in parts)),
            features=merge_features(*(p.features for p in parts)),
            source="; ".join(p.source for p in parts),
            filtered=dict(filtered),
            files=[f for p in parts for f in p.files],
        )

    def columns(self) -> dict[str, Any]:
        """Keyword arguments for ``EventLog.build`` (ids as str arrays, which build accepts)."""
        return {
            "visitor_ids": cast(Sequence[str], self.visitor),
            "item_ids": cast(Sequence[str], self.item),
            "event": self.event,
            "ts": self.ts,
            "session": self.session,
            "channel": self.channel,
            "quantity": self.quantity,
            "value": self.value,
        }


def merge_catalogs(*catalogs: Sequence[CatalogItem]) -> list[CatalogItem]:
    """One entry per item id; a later catalog's entry replaces an earlier one."""
    return list({c.item_id: c for cat in catalogs for c in cat}.values())


def merge_features(*features: dict[str, list[str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for feats in features:
        for v, toks in feats.items():
            out[v] = list(dict.fromkeys([*out.get(v, []), *toks]))
    return out
