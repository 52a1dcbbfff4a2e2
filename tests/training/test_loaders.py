"""Loaders: native CSV / JSON Lines, catalog, column mapping, presets, and the errors users see."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from models.dataset import CHANNELS
from models.domain import Channel, EventType, ItemKind, Stage
from models.errors import DataError, EmptyDatasetError, InvalidInputError
from training.loaders import (
    PRESETS,
    load_catalog,
    load_events,
    load_mapping,
    load_train_test,
    read_events,
    read_train_test,
)
from training.tables import did_you_mean, session_keys

OTTO = Path(__file__).parents[1] / "fixtures" / "otto-sample.jsonl"
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()

EVENTS_CSV = """\
visitor_id,item_id,event,timestamp,session_id,channel,quantity,value,country
b,x,purchase,2024-01-01T02:00:00Z,s1,email,2,19.5,United Kingdom
a,y,product_view,2024-01-01T01:00:00,s2,,,,
b,y,product_view,2024-01-01T00:30:00+00:00,s1,ad,1,,United Kingdom
a,x,add_to_cart,2024-01-01T00:00:00Z,,direct,3,,DE
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def error_of(exc: pytest.ExceptionInfo[DataError]) -> DataError:
    message = str(exc.value)
    assert "\n" not in message
    return exc.value


# -- native format ----------------------------------------------------------------------------------------
def test_native_csv_round_trip(tmp_path: Path) -> None:
    log = load_events(write(tmp_path / "events.csv", EVENTS_CSV))
    assert log.n_events == 4
    assert log.visitor_ids == ["a", "b"]
    assert sorted(log.item_ids) == ["x", "y"]
    assert [log.visitor_ids[v] for v in log.visitor] == ["a", "a", "b", "b"]
    assert np.all(np.diff(log.ts[:2]) >= 0)
    assert np.all(np.diff(log.ts[2:]) >= 0)
    assert log.ts.tolist() == [T0, T0 + 3600, T0 + 1800, T0 + 7200]
    assert [log.event_type(r) for r in range(4)] == [
        EventType.ADD_TO_CART,
        EventType.PRODUCT_VIEW,
        EventType.PRODUCT_VIEW,
        EventType.PURCHASE,
    ]
    dtypes = {c: getattr(log, c).dtype for c in ("visitor", "item", "event", "ts", "session", "channel")}
    assert dtypes == {
        "visitor": np.int32,
        "item": np.int32,
        "event": np.int8,
        "ts": np.float64,
        "session": np.int64,
        "channel": np.int8,
    }
    assert log.quantity.dtype == np.float32
    assert log.value.dtype == np.float32
    assert log.quantity.tolist() == [3, 1, 1, 2]  # empty quantity reads as 1
    assert np.isnan(log.value[:3]).all()
    assert log.value[3] == pytest.approx(19.5)
    assert log.session[0] == -1
    assert log.session[1] != log.session[2]
    assert log.session[2] == log.session[3]
    assert log.session[2] == session_keys(["s1"])[0]
    assert [CHANNELS[c] if c >= 0 else None for c in log.channel] == [
        Channel.DIRECT,
        None,
        Channel.AD,
        Channel.EMAIL,
    ]
    assert log.visitor_features == [["country:de"], ["country:united kingdom"]]
    assert "events.csv" in log.source


def test_jsonl_reads_like_csv(tmp_path: Path) -> None:
    rows = [
        {"visitor_id": "b", "item_id": "x", "event": "purchase", "timestamp": "2024-01-01T02:00:00Z",
         "session_id": "s1", "channel": "email", "quantity": 2, "value": 19.5, "country": "United Kingdom"},
        {"visitor_id": "a", "item_id": "y", "event": "product_view", "timestamp": T0 + 3600,
         "session_id": "s2"},
        {"visitor_id": "b", "item_id": "y", "event": "product_view", "timestamp": "2024-01-01T00:30:00+00:00",
         "session_id": "s1", "channel": "ad", "quantity": 1, "value": None, "country": "United Kingdom"},
        {"visitor_id": "a", "item_id": "x", "event": "add_to_cart", "timestamp": int(T0), "channel": "direct",
         "quantity": 3, "country": "DE"},
    ]  # fmt: skip
    path = write(tmp_path / "events.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    from_json = load_events(path)
    from_csv = load_events(write(tmp_path / "events.csv", EVENTS_CSV))
    for col in ("visitor", "item", "event", "ts", "session", "channel", "quantity"):
        assert getattr(from_json, col).tolist() == getattr(from_csv, col).tolist(), col
    assert np.array_equal(from_json.value, from_csv.value, equal_nan=True)
    assert from_json.visitor_features == from_csv.visitor_features


def test_gzip_and_tsv(tmp_path: Path) -> None:
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress(EVENTS_CSV.encode()))
    tsv = write(tmp_path / "events.tsv", EVENTS_CSV.replace(",", "\t"))
    assert (
        load_events(gz).ts.tolist()
        == load_events(tsv).ts.tolist()
        == load_events(write(tmp_path / "e.csv", EVENTS_CSV)).ts.tolist()
    )


@pytest.mark.parametrize(
    "cells",
    [
        ["2024-01-01T00:00:00Z"] * 2,  # numpy fast path
        ["2024-01-01 00:00:00", "2024-01-01T00:00:00"],
        ["2024-01-01T01:00:00+01:00", "2023-12-31T19:00:00-05:00"],  # offsets: careful path
        [str(int(T0)), f"{T0:.3f}"],  # POSIX seconds
        [str(int(T0)), "2024-01-01T00:00:00Z"],  # mixed
        ["2024-01-01", "2024-01-01T00:00:00.000000"],
    ],
)
def test_iso_and_posix_timestamps_agree(tmp_path: Path, cells: list[str]) -> None:
    body = "".join(f"v{i},x,purchase,{c}\n" for i, c in enumerate(cells))
    log = load_events(write(tmp_path / "e.csv", "visitor_id,item_id,event,timestamp\n" + body))
    assert log.ts.tolist() == [T0] * len(cells)


def test_quoted_csv_and_blank_lines(tmp_path: Path) -> None:
    text = 'visitor_id,item_id,event,timestamp\r\n"a,1",x,purchase,1\r\n\r\n"b\nc",y,search,2\r\n'
    log = load_events(write(tmp_path / "e.csv", text))
    assert log.visitor_ids == ["a,1", "b\nc"]
    assert log.n_events == 2


def test_session_keys_are_stable_blake2b() -> None:
    expected = int.from_bytes(hashlib.blake2b(b"s1", digest_size=8).digest(), "big") & (2**63 - 1)
    assert session_keys(["s1", "s1"]).tolist() == [expected, expected]
    assert session_keys(["s2"]).dtype == np.int64
    assert session_keys(["s2"])[0] >= 0


# -- catalog ----------------------------------------------------------------------------------------------
CATALOG_CSV = """\
item_id,kind,title,category,price,tags,stages,in_stock,repeatable
x,product,Kettle,kitchen,19.99,steel|electric,,yes,0
guide,content,How to choose,guides,,,awareness|Consideration,,
y,,Tea,food,3,,,false,true
"""


def test_catalog_parsing(tmp_path: Path) -> None:
    items = {c.item_id: c for c in load_catalog(write(tmp_path / "catalog.csv", CATALOG_CSV))}
    assert items["x"].kind is ItemKind.PRODUCT
    assert items["x"].price == pytest.approx(19.99)
    assert items["x"].tags == ("steel", "electric")
    assert items["x"].in_stock
    assert not items["x"].repeatable
    assert items["guide"].kind is ItemKind.CONTENT
    assert items["guide"].price is None
    assert items["guide"].stages == (Stage.AWARENESS, Stage.CONSIDERATION)
    assert items["guide"].in_stock
    assert not items["guide"].repeatable
    assert items["y"].kind is ItemKind.PRODUCT
    assert not items["y"].in_stock
    assert items["y"].repeatable


def test_catalog_jsonl_accepts_lists(tmp_path: Path) -> None:
    line = {"item_id": "g", "kind": "content", "tags": ["a", "b"], "stages": ["decision"], "in_stock": False}
    (item,) = load_catalog(write(tmp_path / "catalog.jsonl", json.dumps(line) + "\n"))
    assert item.tags == ("a", "b")
    assert item.stages == (Stage.DECISION,)
    assert item.in_stock is False


def test_events_with_catalog_keep_catalog_only_items(tmp_path: Path) -> None:
    log = load_events(
        write(tmp_path / "events.csv", EVENTS_CSV), catalog=write(tmp_path / "c.csv", CATALOG_CSV)
    )
    by_id = {c.item_id: c for c in log.catalog}
    assert set(by_id) == {"x", "y", "guide"}
    assert by_id["x"].title == "Kettle"
    assert by_id["guide"].kind is ItemKind.CONTENT
    assert "c.csv" in log.source


# -- column mapping ---------------------------------------------------------------------------------------
def test_mapping_reads_a_foreign_csv(tmp_path: Path) -> None:
    mapping = {
        "columns": {"visitor_id": "user", "item_id": "sku", "event": "action", "timestamp": "ts"},
        "events": {"view": "product_view", "buy": "purchase"},
        "timestamp_format": "%d/%m/%Y %H:%M",
        "default_event": "page_view",
        "delimiter": ";",
    }
    m = load_mapping(write(tmp_path / "mapping.json", json.dumps(mapping)))
    text = (
        "user;sku;action;ts;extra\n"
        "u1;A;view;02/01/2024 10:00;z\nu1;B;buy;02/01/2024 10:05;z\nu2;A;;01/01/2024 00:00;z\n"
    )
    log = load_events(write(tmp_path / "shop.csv", text), mapping=m)
    assert log.visitor_ids == ["u1", "u2"]
    assert [log.event_type(r) for r in range(3)] == [
        EventType.PRODUCT_VIEW,
        EventType.PURCHASE,
        EventType.PAGE_VIEW,
    ]
    assert log.ts[2] == T0
    assert log.ts[0] == T0 + 86400 + 36000


def test_mapping_unix_ms_and_no_event_column(tmp_path: Path) -> None:
    m = load_mapping(
        write(tmp_path / "m.json", '{"timestamp_format": "unix_ms", "default_event": "purchase"}')
    )
    log = load_events(
        write(tmp_path / "e.csv", f"visitor_id,item_id,timestamp\na,x,{int(T0 * 1000)}\n"), mapping=m
    )
    assert log.ts.tolist() == [T0]
    assert log.event_type(0) is EventType.PURCHASE


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"colums": {}}', "unknown field `colums`"),
        ('{"columns": {"user": "visitor"}}', "unknown native column 'user'"),
        ('{"events": {"view": "looked"}}', "unknown event 'looked'"),
        ('{"timestamp_format": "dd/mm/yyyy"}', "strptime"),
        ('{"delimiter": ";;"}', "one character"),
        ('{\n"columns": {1}}', "invalid JSON"),
    ],
)
def test_bad_mapping_names_the_file(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(DataError) as exc:
        load_mapping(write(tmp_path / "mapping.json", text))
    assert "mapping.json" in str(exc.value)
    assert needle in str(exc.value)
    error_of(exc)


# -- errors -----------------------------------------------------------------------------------------------
HEAD = "visitor_id,item_id,event,timestamp\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "column", "needle"),
    [
        ("e.csv", HEAD + "a,x,purchase,1\n" * 15 + "a,x,purchase,yesterday\n", 17, "timestamp",
         "expected ISO-8601 or POSIX seconds, got 'yesterday'"),
        ("e.csv", HEAD + "a,x,purchase,2024-01-01\na,x,purchase,\n", 3, "timestamp", "got an empty cell"),
        ("e.csv", HEAD + "a,x,purchase,1\na,x,bought,2\n", 3, "event", "unknown event 'bought'"),
        ("e.csv", HEAD + "a,x,purchase,1700000000000\n", 2, "timestamp", "milliseconds"),
        ("e.csv", HEAD + ",x,purchase,1\n", 2, "visitor_id", "expected an id"),
        ("e.csv", HEAD + "a,x,purchase\n", 2, None, "expected 4 fields"),
        ("e.csv", HEAD + 'a,"x\ny",purchase,1\nb,x,purchase,nope\n', 4, "timestamp", "got 'nope'"),
        ("e.csv", HEAD.strip() + ",channel\na,x,purchase,1,tv\n", 2, "channel", "unknown channel 'tv'"),
        ("e.csv", HEAD.strip() + ",quantity\na,x,purchase,1,-2\n", 2, "quantity", "positive number"),
        ("e.csv", HEAD.strip() + ",value\na,x,purchase,1,cheap\n", 2, "value", "expected a number"),
        ("e.jsonl", ('{"visitor_id": "a", "item_id": "x", "event": "purchase", "timestamp": 1}\n'
         '{"visitor_id": "a",\n'), 2, None, "invalid JSON"),
        ("e.jsonl", '\n["a", "x"]\n', 2, None, "found a JSON array"),
        ("e.jsonl", '{"visitor_id": "a"}\n"text"\n', 2, None, "expected a JSON object, got str"),
        ("e.jsonl", '{"visitor_id": "a", "item_id": {"id": 1}, "event": "purchase", "timestamp": 1}\n', 1,
         "item_id", "expected a string or number"),
    ],
)  # fmt: skip
def test_bad_rows_name_file_line_and_column(
    tmp_path: Path, name: str, text: str, line: int, column: str | None, needle: str
) -> None:
    with pytest.raises(DataError) as exc:
        load_events(write(tmp_path / name, text))
    err = error_of(exc)
    assert (err.path, err.line, err.column) == (str(tmp_path / name), line, column)
    assert needle in str(err)
    assert f"{name}:{line}" in str(err)


def test_unknown_event_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"expected one of: page_view, content_view, .*wishlist"):
        load_events(write(tmp_path / "e.csv", HEAD + "a,x,clicked,1\n"))


def test_missing_column_lists_the_found_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_events(write(tmp_path / "events.csv", "a,b,c\n1,2,3\n"))
    assert str(exc.value).endswith("events.csv: missing column 'visitor_id' (found: a, b, c)")


def test_missing_file_directory_and_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: file not found"):
        load_events(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="no events files in this directory"):
        load_events(tmp_path)
    with pytest.raises(DataError, match=r"events\.xlsx: unknown file type '\.xlsx'"):
        load_events(write(tmp_path / "events.xlsx", HEAD))
    with pytest.raises(DataError, match=r"catalog\.csv: file not found"):
        load_events(write(tmp_path / "e.csv", HEAD + "a,x,purchase,1\n"), catalog=tmp_path / "catalog.csv")


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "e.csv"
    path.write_bytes(HEAD.encode() + b"a,x,purchase,1\n\xff,x,purchase,2\n")
    with pytest.raises(DataError) as exc:
        load_events(path)
    assert error_of(exc).line == 3
    assert "UTF-8" in str(exc.value).upper()


@pytest.mark.parametrize("text", ["", "\n", HEAD, HEAD + "\n\n"])
def test_empty_dataset_names_the_file(tmp_path: Path, text: str) -> None:
    with pytest.raises(EmptyDatasetError, match=r"events\.csv"):
        load_events(write(tmp_path / "events.csv", text))


def test_empty_jsonl(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match=r"e\.jsonl"):
        load_events(write(tmp_path / "e.jsonl", "\n"))


@pytest.mark.parametrize(
    ("text", "line", "column", "needle"),
    [
        ("item_id,stages\na,awareness|buying\n", 2, "stages", "unknown stage 'buying'"),
        ("item_id,in_stock\na,maybe\n", 2, "in_stock", "true/false"),
        (
            "item_id,kind\na,service\n",
            2,
            "kind",
            "unknown kind 'service' (expected one of: product, content)",
        ),
        ("item_id,price\na,-1\n", 2, "price", "price >= 0"),
        ("item_id\na\nb\na\n", 4, "item_id", "duplicate item id 'a' (first on line 2)"),
    ],
)
def test_bad_catalog_rows(tmp_path: Path, text: str, line: int, column: str, needle: str) -> None:
    with pytest.raises(DataError) as exc:
        load_catalog(write(tmp_path / "catalog.csv", text))
    err = error_of(exc)
    assert (err.line, err.column) == (line, column)
    assert needle in str(err)
    assert "catalog.csv" in str(err)


def test_preset_options_are_checked(tmp_path: Path) -> None:
    assert set(PRESETS) == {"native", "uci-online-retail", "movielens-100k", "otto"}
    path = write(tmp_path / "e.csv", HEAD + "a,x,purchase,1\n")
    assert load_events(path, preset="native").n_events == 1
    with pytest.raises(InvalidInputError, match="unknown preset"):
        load_events(path, preset="retailrocket")
    with pytest.raises(InvalidInputError, match="native format"):
        load_events(OTTO, preset="otto", mapping=load_mapping(write(tmp_path / "m.json", "{}")))


# -- UCI Online Retail --------------------------------------------------------------------------------------
UCI_HEAD = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
UCI_DAY1 = UCI_HEAD + (
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom\n"
    "536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom\n"
    "536366,22633,HAND WARMER UNION JACK,6,2010-12-01 08:28:00,1.85,,United Kingdom\n"  # no customer
    "536367,POST,POSTAGE,1,2010-12-01 08:34:00,18.00,12583.0,France\n"  # not a product
    '536368,22960,"JAM MAKING SET, WITH JARS",0,2010-12-01 08:34:00,4.25,12583.0,France\n'  # quantity 0
)
UCI_DAY2 = UCI_HEAD + (
    "536369,85123A,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-02 09:00:00,2.95,12583.0,France\n"
    "536370,22139,RETROSPOT TEA SET CERAMIC,1,2010-12-02 09:10:00,0.00,12583.0,France\n"  # price 0
    "C536371,71053,WHITE METAL LANTERN,-2,2010-12-02 10:00:00,3.39,17850.0,United Kingdom\n"
    "A536372,B,Adjust bad debt,1,2010-12-02 11:00:00,11062.06,,United Kingdom\n"
    "536373,84029G,JUMBO BAG RED RETROSPOT,4,2010-12-02 12:00:00,1.95,13047.0,United Kingdom\n"
    "536373,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-02 12:00:00,2.75,13047.0,United Kingdom\n"
)


def test_uci_rules_on_a_directory(tmp_path: Path) -> None:
    write(tmp_path / "by-day" / "2010-12-01.csv", UCI_DAY1)
    write(tmp_path / "by-day" / "2010-12-02.csv", UCI_DAY2)
    write(tmp_path / "by-day" / "notes.txt", "not data")
    log = load_events(tmp_path / "by-day", preset="uci-online-retail")
    assert log.n_events == 6
    assert log.visitor_ids == ["12583", "13047", "17850"]
    events = Counter(log.event_type(r) for r in range(log.n_events))
    assert events == {EventType.PURCHASE: 5, EventType.CANCEL: 1}
    cancel = int(np.flatnonzero(log.event == EventType.CANCEL.code)[0])
    assert log.item_ids[log.item[cancel]] == "71053"
    assert log.quantity[cancel] == 2
    assert log.value[cancel] == pytest.approx(6.78)
    # one invoice is one basket: both lines of 536365 share a session, other invoices differ
    v17850 = log.visitor == log.visitor_ids.index("17850")
    sessions = log.session[v17850 & (log.event == EventType.PURCHASE.code)]
    assert len(set(sessions.tolist())) == 1
    assert log.session[cancel] != sessions[0]
    assert log.ts.min() == dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC).timestamp()
    for rule in ("no CustomerID 2", "non-product StockCode 1", "Quantity <= 0 1", "UnitPrice <= 0 1"):
        assert rule in log.source
    assert "filtered 5 rows" in log.source
    assert "2 file(s), 11 rows" in log.source
    _, summary = read_events(tmp_path / "by-day", preset="uci-online-retail")
    assert [(Path(f.path).name, f.rows) for f in summary.files] == [
        ("2010-12-01.csv", 5),
        ("2010-12-02.csv", 6),
    ]
    assert (summary.rows, summary.events) == (11, 6)
    assert summary.filtered == {
        "no CustomerID": 2,
        "non-product StockCode": 1,
        "sale with Quantity <= 0": 1,
        "sale with UnitPrice <= 0": 1,
    }
    assert "filtered 5 (no CustomerID 2, non-product StockCode 1," in summary.lines()[0]
    heart = next(c for c in log.catalog if c.item_id == "85123A")
    assert heart.title == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert heart.category == "holder"
    assert heart.price == pytest.approx(2.75)  # median of 2.55, 2.95, 2.75
    assert heart.tags == ("white", "hanging", "heart", "light", "holder")
    bag = next(c for c in log.catalog if c.item_id == "84029G")
    assert bag.category == "bag"
    assert log.visitor_features[log.visitor_ids.index("12583")] == ["country:france"]


def test_uci_single_file_with_original_dates(tmp_path: Path) -> None:
    text = UCI_HEAD + "536365,85123A,HEART HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"
    log = load_events(write(tmp_path / "retail.csv", text), preset="uci-online-retail")
    assert log.ts.tolist() == [dt.datetime(2010, 12, 1, 8, 26, tzinfo=dt.UTC).timestamp()]


def test_uci_errors(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match=r"no CustomerID 1"):
        load_events(write(tmp_path / "a.csv", UCI_HEAD + "1,22633,X,6,2010-12-01 08:28:00,1.85,,UK\n"),
                    preset="uci-online-retail")  # fmt: skip
    with pytest.raises(DataError) as exc:
        load_events(write(tmp_path / "b.csv", UCI_HEAD + "1,22633,X,six,2010-12-01 08:28:00,1.85,1,UK\n"),
                    preset="uci-online-retail")  # fmt: skip
    assert (error_of(exc).line, exc.value.column) == (2, "Quantity")
    write(tmp_path / "dir" / "2010-12-01.csv", UCI_DAY1)
    write(tmp_path / "dir" / "2010-12-02.csv", "InvoiceNo,StockCode\n1,2\n")
    with pytest.raises(DataError, match=r"2010-12-02\.csv: missing column 'Description'"):
        load_events(tmp_path / "dir", preset="uci-online-retail")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no \.csv files"):
        load_events(tmp_path / "empty", preset="uci-online-retail")


# -- MovieLens 100K (synthetic lines in its format; the real files are not redistributable) ----------------
ML_ITEM_FLAGS = {"1": (3, 4, 5), "2": (1, 2, 16), "3": ()}


def write_movielens(root: Path, ratings: list[tuple[int, int, int, int]], name: str = "u.data") -> Path:
    write(root / name, "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings))
    lines = []
    for item, genres in ML_ITEM_FLAGS.items():
        flags = "|".join("1" if g in genres else "0" for g in range(19))
        lines.append(f"{item}|Film {item} (199{item})|01-Jan-199{item}||http://example.org/{item}|{flags}")
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    write(root / "u.user", "10|24|M|technician|85711\n20|53|F|other|94043\n30|17|M|student|00000\n")
    return root / name


ML_RATINGS = [(10, 1, 5, 880000000), (10, 2, 3, 880000100), (20, 1, 4, 880000200), (30, 3, 1, 880000300)]


def test_movielens_rating_threshold_and_features(tmp_path: Path) -> None:
    log = load_events(write_movielens(tmp_path, ML_RATINGS), preset="movielens-100k")
    assert log.n_events == 4
    assert log.visitor_ids == ["10", "20", "30"]
    got = {(log.visitor_ids[v], log.item_ids[i], log.event_type(r), float(log.value[r]))
           for r, (v, i) in enumerate(zip(log.visitor, log.item, strict=True))}  # fmt: skip
    assert got == {
        ("10", "1", EventType.REVIEW, 5.0),
        ("10", "2", EventType.PRODUCT_VIEW, 3.0),
        ("20", "1", EventType.REVIEW, 4.0),
        ("30", "3", EventType.PRODUCT_VIEW, 1.0),
    }
    assert log.ts.min() == 880000000.0
    film1 = next(c for c in log.catalog if c.item_id == "1")
    assert film1.title == "Film 1 (1991)"
    assert film1.category == "animation"
    assert film1.tags == ("animation", "children's", "comedy", "1990s")
    assert next(c for c in log.catalog if c.item_id == "3").category == ""
    assert log.visitor_features[0] == ["age:18-24", "gender:m", "occupation:technician"]
    assert log.visitor_features[2][0] == "age:under-18"
    assert "55" not in log.source
    assert "review" in log.source
    assert load_events(tmp_path, preset="movielens-100k").n_events == 4  # a directory means its u.data


def test_movielens_without_side_files_and_bad_lines(tmp_path: Path) -> None:
    write(tmp_path / "ua.base", "1\t2\t5\t880000000\n")
    log = load_events(tmp_path / "ua.base", preset="movielens-100k")
    assert log.n_events == 1
    assert log.catalog[0].title == ""
    assert log.visitor_features == [[]]
    write(tmp_path / "bad.data", "1\t2\t5\t880000000\n\n1\t2\t5\n")
    with pytest.raises(DataError, match=r"bad\.data:3: expected 4 tab-separated fields"):
        load_events(tmp_path / "bad.data", preset="movielens-100k")
    write(tmp_path / "bad2.data", "1\t2\tfive\t880000000\n")
    with pytest.raises(DataError, match=r"bad2\.data:1 column 'rating': expected a number, got 'five'"):
        load_events(tmp_path / "bad2.data", preset="movielens-100k")
    write(tmp_path / "u.item", "1|Too short\n")
    with pytest.raises(DataError, match=r"u\.item:1: expected 24"):
        load_events(tmp_path / "ua.base", preset="movielens-100k")


def test_movielens_train_test_share_the_id_space(tmp_path: Path) -> None:
    write_movielens(tmp_path, ML_RATINGS[:3], "ua.base")
    write(tmp_path / "ua.test", "30\t3\t1\t880000300\n10\t3\t4\t880000400\n")
    train, test = load_train_test(tmp_path / "ua.base", tmp_path / "ua.test", preset="movielens-100k")
    assert train.visitor_ids is test.visitor_ids
    assert train.catalog is test.catalog
    assert (train.n_events, test.n_events) == (3, 2)
    assert train.visitor_ids == ["10", "20", "30"]
    assert len(train.catalog) == 3
    assert sorted(
        test.visitor_ids[v] + ":" + test.item_ids[i] for v, i in zip(test.visitor, test.item, strict=True)
    ) == [
        "10:3",
        "30:3",
    ]
    both = train.concat(test)
    assert both.n_events == 5
    assert np.all(np.diff(both.visitor) >= 0)


# -- OTTO -----------------------------------------------------------------------------------------------
def test_otto_fixture_maps_event_types() -> None:
    raw = [json.loads(line) for line in OTTO.read_text().splitlines() if line.strip()]
    kinds = Counter(e["type"] for s in raw for e in s["events"])
    log = load_events(OTTO, preset="otto")
    got = Counter(log.event_type(r) for r in range(log.n_events))
    assert got == {
        EventType.PRODUCT_VIEW: kinds["clicks"],
        EventType.ADD_TO_CART: kinds["carts"],
        EventType.PURCHASE: kinds["orders"],
    }
    assert log.n_events == sum(kinds.values()) == 862
    assert log.n_visitors == len(raw) == 20
    assert log.n_items == 510
    assert sorted(log.visitor_ids) == sorted(str(s["session"]) for s in raw)
    assert all(log.session[r] == int(log.visitor_ids[log.visitor[r]]) for r in range(log.n_events))
    start = dt.datetime(2022, 7, 31, 22, tzinfo=dt.UTC).timestamp()
    assert start <= log.ts.min()
    assert log.ts.max() < start + 29 * 86400
    assert "862 events" in log.source


def test_otto_bad_line_names_line_and_field(tmp_path: Path) -> None:
    good = OTTO.read_text().splitlines()[0]
    bad = '{"session": 7, "events": [{"aid": 1, "ts": 1659304800025, "type": "views"}]}'
    with pytest.raises(DataError) as exc:
        load_events(write(tmp_path / "otto.jsonl", f"{good}\n{bad}\n"), preset="otto")
    err = error_of(exc)
    assert (err.line, err.column) == (2, "events[0].type")
    assert "otto.jsonl:2" in str(err)
    with pytest.raises(DataError, match=r"otto\.jsonl:1: invalid JSON"):
        load_events(write(tmp_path / "otto.jsonl", "{oops\n"), preset="otto")
    with pytest.raises(EmptyDatasetError, match=r"empty\.jsonl"):
        load_events(write(tmp_path / "empty.jsonl", "\n"), preset="otto")


# -- train/test -------------------------------------------------------------------------------------------
def test_native_train_test_share_one_id_space(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", HEAD + "a,x,purchase,1\nb,y,product_view,2\na,y,search,3\n")
    test = write(tmp_path / "test.csv", HEAD + "c,z,purchase,10\na,x,purchase,11\n")
    catalog = write(tmp_path / "catalog.csv", "item_id,kind\nx,product\nguide,content\n")
    a, b = load_train_test(train, test, catalog=catalog)
    assert a.visitor_ids is b.visitor_ids
    assert a.catalog is b.catalog
    assert a.visitor_ids == ["a", "b", "c"]
    assert set(a.item_ids) == {"x", "y", "z", "guide"}
    assert a.ts.tolist() == [1.0, 3.0, 2.0]
    assert b.ts.tolist() == [11.0, 10.0]
    assert [a.visitor_ids[v] for v in b.visitor] == ["a", "c"]
    assert a.concat(b).n_events == 5
    with pytest.raises(EmptyDatasetError, match=r"empty\.csv"):
        load_train_test(train, write(tmp_path / "empty.csv", HEAD))


# -- several files and directories ------------------------------------------------------------------------
EXPORT_A = (
    '{"visitor_id": "a", "item_id": "x", "event": "product_view", "timestamp": "2024-01-01T00:00:00Z"}\n'
    '{"visitor_id": "a", "item_id": "x", "event": "add_to_cart", "timestamp": "2024-01-01T00:01:00Z"}\n'
)
EXPORT_B = '{"visitor_id": "b", "item_id": "y", "event": "purchase", "timestamp": "2024-01-02T00:00:00Z"}\n'


def test_repeated_paths_and_directories_read_every_file_in_order(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    write(exports / "002.jsonl", EXPORT_B)
    write(exports / "001.jsonl", EXPORT_A)
    write(exports / "000-old.csv", HEAD + "c,z,search,2023-12-31T00:00:00Z\n")  # formats may be mixed
    (exports / "003.jsonl.gz").write_bytes(gzip.compress(EXPORT_B.replace('"b"', '"d"').encode()))
    write(exports / "README.md", "how these were exported")
    write(exports / ".002.jsonl.x1y2.tmp", "half-written")  # export-events' temporary file
    write(exports / "archive" / "old.jsonl", EXPORT_B)  # subdirectories are not read
    catalog = write(exports / "catalog.csv", "item_id,title\nx,X\n")  # the --catalog is not events
    extra = write(tmp_path / "later.csv", HEAD + "e,x,purchase,2024-02-01\n")

    log, summary = read_events([exports, extra], catalog=catalog)

    read = [(Path(f.path).name, f.rows, f.format) for f in summary.files]
    assert read == [
        ("000-old.csv", 1, "csv"),
        ("001.jsonl", 2, "jsonl"),
        ("002.jsonl", 1, "jsonl"),
        ("003.jsonl.gz", 1, "jsonl"),
        ("later.csv", 1, "csv"),
    ]
    assert sorted(Path(p).name for p in summary.skipped) == [
        ".002.jsonl.x1y2.tmp", "README.md", "archive", "catalog.csv",
    ]  # fmt: skip
    assert (summary.reader, summary.rows, summary.events, summary.filtered) == ("native", 6, 6, {})
    assert (summary.catalog, summary.catalog_items) == (str(catalog), 1)
    assert log.n_events == 6
    assert log.visitor_ids == ["a", "b", "c", "d", "e"]
    lines = summary.lines()
    assert lines[0] == "read 5 files (native): 6 rows -> 6 events; filtered none"
    assert any("001.jsonl: 2 rows (jsonl)" in line for line in lines)
    assert any(line.startswith("  not read:") and "README.md" in line for line in lines)
    # the same events as one file: nothing lost, nothing counted twice
    one = load_events(write(tmp_path / "all.csv", HEAD + "a,x,product_view,2024-01-01T00:00:00Z\n"
        "a,x,add_to_cart,2024-01-01T00:01:00Z\nb,y,purchase,2024-01-02\nc,z,search,2023-12-31\n"
        "d,y,purchase,2024-01-02\ne,x,purchase,2024-02-01\n"))  # fmt: skip
    assert sorted(log.ts.tolist()) == sorted(one.ts.tolist())


def test_the_summary_of_many_files_stays_short(tmp_path: Path) -> None:
    for day in range(1, 31):
        write(
            tmp_path / "days" / f"2024-01-{day:02}.csv", HEAD + f"v{day},x,purchase,2024-01-{day:02}\n" * day
        )
        write(tmp_path / "days" / f"2024-01-{day:02}.txt", "notes")
    _, summary = read_events(tmp_path / "days")
    assert len(summary.files) == 30
    assert summary.rows == summary.events == sum(range(1, 31))
    lines = summary.lines()
    assert len(lines) == 1 + 10 + 2 + 1
    assert lines[11] == f"  and 19 more files with {sum(range(11, 30)):,} rows, then"
    assert lines[12].endswith("2024-01-30.csv: 30 rows (csv)")
    assert lines[13].endswith("2024-01-05.txt and 25 more")


def test_a_repeated_events_option_is_not_the_last_file_only(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", EXPORT_A)
    b = write(tmp_path / "b.jsonl", EXPORT_B)
    assert load_events([a, b]).n_events == 3
    assert load_events(a).n_events == 2  # one path still reads as before


def test_a_file_named_twice_or_an_empty_directory_is_refused(tmp_path: Path) -> None:
    a = write(tmp_path / "d" / "a.jsonl", EXPORT_A)
    with pytest.raises(InvalidInputError, match=r"a\.jsonl: named twice \(through .*d and .*a\.jsonl\)"):
        load_events([tmp_path / "d", a])
    with pytest.raises(InvalidInputError, match=r"a\.jsonl: named twice; its events would count twice"):
        load_events([a, a])
    write(tmp_path / "e" / "notes.txt", "nothing here")
    with pytest.raises(DataError, match=r"e: no events files in this directory \(read: \*\.csv .*\.gz\)"):
        load_events(tmp_path / "e")


def test_otto_directory_and_train_test_summaries(tmp_path: Path) -> None:
    sessions = OTTO.read_text().splitlines()
    write(tmp_path / "otto" / "part-1.jsonl", "\n".join(sessions[:5]) + "\n")
    write(tmp_path / "otto" / "part-2.jsonl", "\n".join(sessions[5:]) + "\n")
    log, summary = read_events(tmp_path / "otto", preset="otto")
    assert log.n_events == load_events(OTTO, preset="otto").n_events == 862
    assert [Path(f.path).name for f in summary.files] == ["part-1.jsonl", "part-2.jsonl"]
    assert {f.format for f in summary.files} == {"otto"}
    assert sum(f.rows for f in summary.files) == summary.rows == summary.events == 862

    train = write(tmp_path / "train.csv", HEAD + "a,x,purchase,1\nb,y,product_view,2\n")
    test = [write(tmp_path / "t1.jsonl", EXPORT_A), write(tmp_path / "t2.jsonl", EXPORT_B)]
    a, b, sa, sb = read_train_test(train, test)
    assert a.visitor_ids is b.visitor_ids
    assert (a.n_events, b.n_events) == (2, 3)
    assert [(Path(f.path).name, f.rows) for f in sb.files] == [("t1.jsonl", 2), ("t2.jsonl", 1)]
    assert (sa.events, sb.events) == (2, 3)
    with pytest.raises(InvalidInputError, match=r"t1\.jsonl: read as training and as test events"):
        read_train_test([train, test[0]], test)


# -- hints for files another option reads ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "sep", "shown"),
    [
        ("visitor_id;item_id;event;timestamp", ";", "';'"),
        ("visitor_id\titem_id\tevent\ttimestamp", "\t", "tabs"),
    ],
)
def test_a_semicolon_or_tab_separated_csv_is_detected_and_said(
    tmp_path: Path, header: str, sep: str, shown: str
) -> None:
    rows = [["a", "x", "purchase", "2024-01-01"], ["b", "y", "product_view", "2024-01-02"]]
    path = write(tmp_path / "e.csv", "\n".join([header, *(sep.join(r) for r in rows)]) + "\n")
    log, summary = read_events(path)
    assert log.n_events == 2
    assert summary.files[0].format == f"csv ({shown} detected)"


def test_a_delimiter_that_leaves_one_column_names_the_likely_one(tmp_path: Path) -> None:
    path = write(tmp_path / "e.csv", "visitor_id;item_id;event;timestamp\na;x;purchase;1\n")
    mapping = load_mapping(write(tmp_path / "m.json", '{"delimiter": ","}'))
    with pytest.raises(DataError) as exc:
        load_events(path, mapping=mapping)
    assert str(error_of(exc)).endswith(
        "e.csv:1: the header looks separated by ';' (not ','): use a --mapping file with \"delimiter\": \";\""
    )
    tsv = write(tmp_path / "e.tsv", "visitor_id|item_id|event|timestamp\na|x|purchase|1\n")
    assert read_events(tsv)[1].files[0].format == "tsv ('|' detected)"
    tie = write(tmp_path / "tie.csv", "visitor_id;item_id|event\n")
    with pytest.raises(DataError, match=r"looks separated by ';' or '\|' \(cannot tell which\)"):
        load_events(tie)
    # a comma-separated header keeps its commas even when cells hold semicolons
    plain = write(tmp_path / "plain.csv", HEAD + "a;1,x,purchase,1\n")
    assert load_events(plain).visitor_ids == ["a;1"]


@pytest.mark.parametrize("name", ["u.data", "ua.base", "ratings.csv", "ratings.tsv"])
def test_movielens_ratings_without_the_preset_suggest_it(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    with pytest.raises(DataError) as exc:
        load_events(path)
    assert str(error_of(exc)) == (
        f"{path}: looks like MovieLens ratings (user, item, rating, time; tab-separated, no header):"
        " use --preset movielens-100k"
    )


@pytest.mark.parametrize(
    ("value", "valid", "expected"),
    [
        ("add-to-cart", ["page_view", "add_to_cart"], "add_to_cart"),
        ("Add To Cart", ["page_view", "add_to_cart"], "add_to_cart"),
        ("purchse", ["page_view", "purchase"], "purchase"),
        ("teleport", ["page_view", "purchase"], None),
    ],
)
def test_did_you_mean(value: str, valid: list[str], expected: str | None) -> None:
    assert did_you_mean(value, valid) == expected


def test_enum_errors_list_the_values_and_the_closest(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        load_events(write(tmp_path / "e.csv", HEAD + "a,x,add-to-cart,1\n"))
    message = str(error_of(exc))
    names = ", ".join(e.value for e in EventType)
    assert message.endswith(
        f"unknown event 'add-to-cart' (expected one of: {names}); did you mean add_to_cart?"
    )
    with pytest.raises(
        DataError, match=r"unknown channel 'e-mail' \(expected one of: .*email.*\); did you mean email\?"
    ):
        load_events(write(tmp_path / "c.csv", HEAD.strip() + ",channel\na,x,purchase,1,e-mail\n"))
    with pytest.raises(DataError, match=r"unknown stage 'decison' .*; did you mean decision\?"):
        load_catalog(write(tmp_path / "catalog.csv", "item_id,stages\na,decison\n"))
    with pytest.raises(
        DataError, match=r"'basket' maps to unknown event 'add-to-cart' .*did you mean add_to_cart\?"
    ):
        load_mapping(write(tmp_path / "m.json", '{"events": {"basket": "add-to-cart"}}'))
