"""The presets ``--preset`` names (``PRESETS``, one registry: reader and training defaults of each) and the
readers for public datasets: each turns a dataset's own format into ``RawEvents`` by documented rules.

uci-online-retail  invoice lines; a directory of per-day CSVs (read in file-name order) or one CSV.
    A row with a CustomerID, a product StockCode (5 digits + optional letters), Quantity > 0 and
    UnitPrice > 0 is a ``purchase``; a row of a "C" invoice with a CustomerID, a product StockCode and
    Quantity != 0 is a ``cancel`` (quantity = |Quantity|). Every other row is filtered, counted by reason in
    ``source``. session = the invoice (basket); value = quantity * UnitPrice. The catalog comes from the
    data: title = most frequent Description, tags = its words, category = its product-type noun, price =
    median UnitPrice. Country -> visitor feature ``country:<name>``.
movielens-100k  ``u.data`` or a split (``ua.base``, ``u1.test``, ...): user, item, rating, unix seconds.
    rating >= 4 -> ``review`` (a positive), else ``product_view`` (seen, not liked); value = rating.
    ``u.item`` beside it gives title, genres (category = first, tags = all + decade); ``u.user`` gives
    ``age:<bucket>``, ``gender:<g>``, ``occupation:<o>`` visitor features. Both are optional.
otto  JSON Lines ``{"session", "events": [{"aid", "ts", "type"}]}``: clicks -> product_view, carts ->
    add_to_cart, orders -> purchase; the session is the visitor and the session key. ts is in milliseconds
    (the published files) or seconds (the compact Kaggle copies): values above 1e11 are read as ms.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from models.domain import CatalogItem, EventType
from models.errors import DataError
from models.weights import DEFAULT_POSITIVE
from training.tables import (
    FileRead,
    RawEvents,
    Table,
    map_distinct,
    one_line,
    parse_ids,
    parse_numbers,
    parse_sessions,
    parse_timestamps,
    read_bytes,
    read_csv,
    read_text,
    token_features,
)

# -- UCI Online Retail ----------------------------------------------------------------------------------
UCI_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
_PRODUCT_CODE = re.compile(r"\d{5}[A-Za-z]*")
_STOPWORDS = frozenset({"and", "the", "for", "with", "set", "of", "pack", "assorted", "in", "on", "to"})
# words that describe a product rather than name its type (colours, patterns, sizes)
_NOT_A_TYPE = _STOPWORDS | frozenset(
    {
        "design", "retrospot", "polkadot", "paisley", "pink", "red", "blue", "green", "white", "black",
        "cream", "ivory", "gold", "silver", "purple", "orange", "yellow", "brown", "small", "large",
        "medium", "mini", "jumbo", "big", "vintage", "colour", "colours", "finish", "christmas",
        "woodland", "london", "spaceboy", "skull", "skulls", "edwardian", "suki", "rose", "roses",
    }
)  # fmt: skip


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3]


def _tags(title: str) -> tuple[str, ...]:
    """Up to 6 distinct lowercase words (>= 3 letters, no stopwords) of a description."""
    return tuple(dict.fromkeys(w for w in _words(title) if w not in _STOPWORDS))[:6]


def _product_type(title: str) -> str:
    """The last word that is not a colour/pattern/size: "JUMBO BAG RED RETROSPOT" -> "bag"."""
    words = _words(title)
    kept = [w for w in words if w not in _NOT_A_TYPE]
    return (kept or words or [""])[-1]


def _group_median(group: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """float64[k] median of ``x`` per group id in [0, k); NaN for empty groups."""
    order = np.lexsort((x, group))
    g, v = group[order], x[order]
    lo, hi = np.searchsorted(g, np.arange(k)), np.searchsorted(g, np.arange(k), side="right")
    if not len(v):
        return np.full(k, np.nan)
    mid = (v[np.clip((lo + hi - 1) // 2, 0, len(v) - 1)] + v[np.clip((lo + hi) // 2, 0, len(v) - 1)]) / 2
    return np.where(hi > lo, mid, np.nan)


def _uci_catalog(item: np.ndarray, description: np.ndarray, price: np.ndarray) -> list[CatalogItem]:
    """One product per StockCode of the loaded rows (item, description: str[n]; price: float64[n])."""
    ids, inverse = np.unique(item, return_inverse=True)
    inverse = inverse.reshape(-1)
    positive = price > 0
    median = _group_median(inverse[positive], price[positive], len(ids))
    counts = Counter(zip(inverse.tolist(), (d.strip() for d in description.tolist()), strict=True))
    title = [""] * len(ids)
    best = [0] * len(ids)
    for (i, desc), c in sorted(counts.items()):  # ties: the alphabetically first description
        if desc and c > best[i]:
            title[i], best[i] = desc, c
    return [
        CatalogItem(
            item_id=str(ids[i]),
            title=title[i],
            category=_product_type(title[i]),
            tags=_tags(title[i]),
            price=None if np.isnan(median[i]) else round(float(median[i]), 4),
        )
        for i in range(len(ids))
    ]


def read_uci(path: Path, label: str) -> RawEvents:
    """UCI Online Retail (see the module docstring for the rules)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith((".csv", ".csv.gz")))
        if not files:
            raise DataError("no .csv files in this directory", path=label)
    else:
        files = [path]
    tables = []
    for f in files:
        t = read_csv(f, label if f == path else str(f))
        t.require(UCI_COLUMNS)
        tables.append(t)
    table = Table.concat(tables) if len(tables) > 1 else tables[0]
    customer = map_distinct(table, "CustomerID", lambda c: c.strip().removesuffix(".0"), object).astype(str)
    product = map_distinct(table, "StockCode", lambda c: bool(_PRODUCT_CODE.fullmatch(c.strip())), bool)
    cancel = map_distinct(table, "InvoiceNo", lambda c: c.strip().upper().startswith("C"), bool)
    qty = parse_numbers(table, "Quantity", None)
    price = parse_numbers(table, "UnitPrice", None)
    ts = parse_timestamps(table, "InvoiceDate", extra_formats=("%m/%d/%Y %H:%M",))  # the original UCI file
    known = (customer != "") & product
    rules = {
        "no CustomerID": customer == "",
        "non-product StockCode": (customer != "") & ~product,
        "sale with Quantity <= 0": known & ~cancel & (qty <= 0),
        "sale with UnitPrice <= 0": known & ~cancel & (qty > 0) & (price <= 0),
        "cancellation with Quantity 0": known & cancel & (qty == 0),
    }
    keep = ~np.logical_or.reduce(list(rules.values()))
    rows = np.flatnonzero(keep)
    n_cancel = int(cancel[rows].sum())
    filtered = ", ".join(f"{name} {int(m.sum()):,}" for name, m in rules.items() if m.any()) or "none"
    source = (
        f"uci-online-retail {label}: {len(files)} file(s), {table.n:,} rows -> {len(rows) - n_cancel:,}"
        f" purchase + {n_cancel:,} cancel events; filtered {table.n - len(rows):,} rows ({filtered})"
    )
    item = np.asarray(table.columns["StockCode"], dtype=str)[rows]
    quantity = np.abs(qty[rows])
    visitor = customer[rows]
    return RawEvents(
        path=label,
        visitor=visitor,
        item=np.char.strip(item),
        event=np.where(cancel[rows], EventType.CANCEL.code, EventType.PURCHASE.code).astype(np.int8),
        ts=ts[rows],
        session=parse_sessions(table, "InvoiceNo")[rows],
        quantity=quantity,
        value=quantity * price[rows],
        catalog=_uci_catalog(
            np.char.strip(item), np.asarray(table.columns["Description"], dtype=str)[rows], price[rows]
        ),
        features=token_features(
            visitor.tolist(), np.asarray(table.columns["Country"], dtype=str)[rows].tolist(), "country"
        ),
        source=source,
        filtered={name: int(m.sum()) for name, m in rules.items() if m.any()},
        files=[FileRead(path=t.parts[0].path, rows=t.n, format=t.format) for t in tables],
    )


# -- MovieLens 100K -------------------------------------------------------------------------------------
GENRES = (
    "unknown", "action", "adventure", "animation", "children's", "comedy", "crime", "documentary", "drama",
    "fantasy", "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western",
)  # fmt: skip
_AGE_BUCKETS = ((18, "under-18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (50, "45-49"), (56, "50-55"))


def _pipe_rows(path: Path, min_fields: int, fields: str) -> list[tuple[int, list[str]]]:
    """(line, fields) of a latin-1 ``|``-separated file; fewer than ``min_fields`` fields is an error."""
    rows = []
    for i, line in enumerate(read_text(path, str(path), "latin-1").splitlines(), 1):
        if line.strip():
            parts = line.split("|")
            if len(parts) < min_fields:
                raise DataError(
                    f"expected {min_fields} |-separated fields ({fields}), got {len(parts)}",
                    path=str(path),
                    line=i,
                )
            rows.append((i, parts))
    return rows


def _movielens_items(path: Path) -> list[CatalogItem]:
    items = []
    for i, f in _pipe_rows(
        path, 5 + len(GENRES), "movie id|title|release date|video date|URL|19 genre flags"
    ):
        flags = [g.strip() for g in f[5 : 5 + len(GENRES)]]
        if not set(flags) <= {"0", "1"}:
            raise DataError(f"expected 0/1 genre flags, got {'|'.join(flags)!r}", path=str(path), line=i)
        genres = [g for g, flag in zip(GENRES, flags, strict=True) if flag == "1"]
        year = f[2].strip()[-4:]
        decade = [f"{int(year) // 10 * 10}s"] if year.isdigit() else []
        items.append(
            CatalogItem(
                item_id=f[0].strip(),
                title=f[1].strip(),
                category=genres[0] if genres else "",
                tags=(*genres, *decade),
            )
        )
    return items


def _age_bucket(age: int) -> str:
    return next((name for limit, name in _AGE_BUCKETS if age < limit), "56+")


def _movielens_users(path: Path) -> dict[str, list[str]]:
    feats = {}
    for i, f in _pipe_rows(path, 4, "user id|age|gender|occupation|zip code"):
        if not f[1].strip().isdigit():
            raise DataError(f"expected an age in years, got {f[1]!r}", path=str(path), line=i, column="age")
        feats[f[0].strip()] = [
            f"age:{_age_bucket(int(f[1]))}",
            f"gender:{f[2].strip().lower()}",
            f"occupation:{f[3].strip().lower()}",
        ]
    return feats


def read_movielens(path: Path, label: str) -> RawEvents:
    """MovieLens 100K ratings (see the module docstring); a directory means its ``u.data``."""
    if path.is_dir():
        path, label = path / "u.data", str(path / "u.data")
    lines = read_text(path, label, "latin-1").splitlines()
    numbered = [(i, line.split()) for i, line in enumerate(lines, 1) if line.strip()]
    table = Table.from_rows(
        label,
        ["user_id", "item_id", "rating", "timestamp"],
        [fields for _, fields in numbered],
        lambda row: numbered[row][0],
        "tab-separated fields (user id, item id, rating, unix seconds)",
    )
    rating = parse_numbers(table, "rating", None, positive=True)
    items = path.parent / "u.item"
    users = path.parent / "u.user"
    n_pos = int((rating >= 4).sum())
    return RawEvents(
        path=label,
        visitor=parse_ids(table, "user_id"),
        item=parse_ids(table, "item_id"),
        event=np.where(rating >= 4, EventType.REVIEW.code, EventType.PRODUCT_VIEW.code).astype(np.int8),
        ts=parse_timestamps(table, "timestamp", "unix"),
        value=rating,
        catalog=_movielens_items(items) if items.is_file() else [],
        features=_movielens_users(users) if users.is_file() else {},
        source=(
            f"movielens-100k {label}: {table.n:,} ratings -> {n_pos:,} review (rating >= 4)"
            f" + {table.n - n_pos:,} product_view; u.item {'used' if items.is_file() else 'absent'},"
            f" u.user {'used' if users.is_file() else 'absent'}"
        ),
    )


# -- OTTO -----------------------------------------------------------------------------------------------
class _OttoEvent(msgspec.Struct):
    aid: int
    ts: int
    type: Literal["clicks", "carts", "orders"]


class _OttoSession(msgspec.Struct):
    session: int
    events: list[_OttoEvent]


OTTO_EVENTS = {
    "clicks": EventType.PRODUCT_VIEW.code,
    "carts": EventType.ADD_TO_CART.code,
    "orders": EventType.PURCHASE.code,
}
_OTTO_SHAPE = '{"session": int, "events": [{"aid": int, "ts": int, "type": "clicks"|"carts"|"orders"}]}'


def read_otto(path: Path, label: str) -> RawEvents:
    """OTTO sessions (see the module docstring)."""
    decode = msgspec.json.Decoder(_OttoSession).decode
    sessions: list[int] = []
    aids: list[int] = []
    times: list[int] = []
    types: list[str] = []
    n_sessions = 0
    for i, raw in enumerate(read_bytes(path, label).split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            s = decode(raw)
        except msgspec.ValidationError as e:
            message, _, where = one_line(e).partition(" - at `$")
            column = where.rstrip("`").lstrip(".") or None
            raise DataError(f"{message}; expected {_OTTO_SHAPE}", path=label, line=i, column=column) from None
        except msgspec.DecodeError as e:
            raise DataError(f"invalid JSON: {one_line(e)}", path=label, line=i) from None
        n_sessions += 1
        sessions += [s.session] * len(s.events)
        aids += [e.aid for e in s.events]
        times += [e.ts for e in s.events]
        types += [e.type for e in s.events]
    ts = np.asarray(times, dtype=np.float64)
    in_ms = bool(len(ts)) and float(ts.max()) > 1e11
    counts = Counter(types)
    session = np.asarray(sessions, dtype=np.int64)
    return RawEvents(
        path=label,
        visitor=session.astype(str),
        item=np.asarray(aids, dtype=np.int64).astype(str),
        event=np.fromiter((OTTO_EVENTS[t] for t in types), dtype=np.int8, count=len(types)),
        ts=ts / 1000.0 if in_ms else ts,
        session=session,
        source=(
            f"otto {label}: {n_sessions:,} sessions, {len(types):,} events"
            f" ({', '.join(f'{t} {counts[t]:,}' for t in OTTO_EVENTS)}); ts in {'ms' if in_ms else 's'}"
        ),
    )


# -- the registry ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """One kind of input ``--preset`` names: what it reads, its reader, and what its data means for
    training.

    reader           None for the native format (``training.loaders.read_native``, which takes a column
                     mapping)
    directory_files  suffixes (before an optional .gz) of the files it takes from a directory, in name
                     order; empty: the reader reads a directory itself
    training         the settings that differ from the defaults, as a model configuration file gives them
                     (``training.model_config``): which events are positives, how to carve the validation
                     set, the factorisation schedule
    """

    name: str
    description: str
    reader: Callable[[Path, str], RawEvents] | None
    directory_files: tuple[str, ...] = ()
    training: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "native",
            "native CSV / JSON Lines events (the default)",
            None,
            (".csv", ".tsv", ".jsonl", ".ndjson", ".json"),
            {"positive": sorted(e.value for e in DEFAULT_POSITIVE)},
        ),
        Preset(
            "uci-online-retail",
            "UCI Online Retail invoice lines (directory of per-day CSVs or one CSV)",
            read_uci,
            (),
            # a longer validation window: re-buys of wholesale customers need months to show
            {"positive": ["purchase"], "blend": {"validation_fraction": 0.3}},
        ),
        Preset(
            "movielens-100k",
            "MovieLens 100K ratings (u.data or a split such as ua.base; u.item/u.user beside it)",
            read_movielens,
            (),
            # MovieLens rating splits are not ordered in time per user: validate on a random holdout. Its
            # holdout keeps 15 % of the positives from the first fit, so the factorisation gets the longer
            # schedule (measured: with the defaults tuned for the 1M-event benchmark, P@10 fell to 0.92x
            # plain LightFM)
            {
                "positive": ["review"],
                "blend": {"validation": "holdout"},
                "lightfm": {"epochs": 20, "max_sampled": 30, "warm_epochs": 10},
            },
        ),
        Preset(
            "otto",
            "OTTO session JSON Lines (clicks, carts, orders)",
            read_otto,
            (".jsonl", ".ndjson"),
            {"positive": ["add_to_cart", "purchase"]},
        ),
    )
}
