"""``journeyrec simulate | train | inspect | evaluate`` end to end on a small simulated shop, and the
one-line errors (exit status 2, no traceback) for everything a user can get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from journeyrec.cli import main
from models import artifact

SIM = ["--visitors", "400", "--items", "150", "--seed", "5"]
SPLIT = "2024-04-10"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    assert main(["simulate", "--out", str(out), *SIM, "--json"]) == 0
    return out


@pytest.fixture(scope="module")
def models_dir(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    config = out / "model.toml"  # --epochs wins over the file's epochs
    config.write_text("[lightfm]\nepochs = 30\nno_components = 24\n\n[candidates]\nneighbours = 50\n")
    args = ["train", "--events", str(shop / "events.csv"), "--catalog", str(shop / "catalog.csv")]
    assert main([*args, "--out", str(out / "m"), "--epochs", "3", "--config", str(config), "--json"]) == 0
    return out / "m"


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_simulate_writes_the_native_files(shop: Path) -> None:
    header = (shop / "events.csv").read_text().splitlines()[0]
    assert header.startswith("visitor_id,item_id,event,timestamp")
    assert (shop / "catalog.csv").read_text().startswith("item_id,kind,")


def test_train_publishes_a_verified_version_and_inspect_shows_the_blend(
    models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    versions = artifact.list_versions(models_dir)
    assert len(versions) == 1
    assert artifact.resolve_latest(models_dir).name == versions[0]
    capsys.readouterr()
    assert main(["inspect", str(models_dir), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["version"] == versions[0]
    stages = {s["stage"] for s in manifest["blend"]["stages"]}
    assert stages == {"awareness", "consideration", "decision", "retention", "advocacy"}
    assert set(manifest["files"]) >= {"arrays.npz", "catalog.json"}
    # the configuration file: named and applied, stored in the manifest, shown in the file's format
    assert manifest["metrics"]["config"] == "model.toml"
    assert manifest["parameters"]["factors"]["no_components"] == 24
    assert manifest["parameters"]["factors"]["epochs"] == 3
    assert manifest["parameters"]["neighbours"] == 50
    assert main(["inspect", str(models_dir)]) == 0
    shown = capsys.readouterr().out
    assert "configuration, in the format --config takes (trained with --config model.toml):" in shown
    assert "[lightfm]" in shown
    assert "no_components = 24" in shown
    assert "neighbours = 50" in shown


def _copy_latest(models_dir: Path, into: Path) -> Path:
    """A copy of the latest version's files, to damage or edit."""
    version = artifact.resolve_latest(models_dir)
    copy = into / version.name
    copy.mkdir()
    for f in version.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    return copy


def test_inspect_refuses_a_tampered_model(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = _copy_latest(models_dir, tmp_path)
    data = bytearray((copy / "catalog.json").read_bytes())
    data[10] ^= 1
    (copy / "catalog.json").write_bytes(bytes(data))
    _one_line_error(capsys, ["inspect", str(copy)], "catalog.json", "sha256")
    (copy / "arrays.npz").unlink()
    _one_line_error(capsys, ["inspect", str(copy)], "arrays.npz", "missing")


def test_inspect_shows_a_model_whose_blend_lacks_a_newer_feature(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model published before a blend feature existed serves it with weight 0, and inspect shows 0."""
    copy = _copy_latest(models_dir, tmp_path)
    manifest = json.loads((copy / artifact.MANIFEST).read_text())
    for stage in manifest["blend"]["stages"]:
        del stage["weights"]["substitute"]
    (copy / artifact.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["inspect", str(copy)]) == 0
    assert "substitute" in capsys.readouterr().out


def test_evaluate_writes_the_documented_json(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    report = tmp_path / "eval.html"
    argv = ["evaluate", "--events", str(shop / "events.csv"), "--catalog", str(shop / "catalog.csv")]
    argv += ["--split-at", SPLIT, "--k", "5", "--epochs", "3", "--json", str(out), "--report", str(report)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["bootstrap"] == {"resamples": 1000, "seed": 1, "level": 0.95, "reference": "stage_aware"}
    config = result["configuration"]
    assert config["stage_aware"]["lightfm"]["epochs"] == 3
    assert config["tifu_knn"] == {
        "neighbours": 300,
        "within_decay": 0.9,
        "group_decay": 0.7,
        "alpha": 0.7,
        "group_size": 7,
    }
    assert set(result["differences"]) == set(result["models"]) - {"stage_aware"}
    for comparison in result["differences"].values():
        for d in (
            *comparison["overall"].values(),
            *(v for s in comparison["segments"].values() for v in s.values()),
        ):
            assert d["ci95"][0] <= d["value"] <= d["ci95"][1]
    assert {"dataset", "k", "split", "models"} <= set(result)
    assert result["k"] == 5
    assert set(result["models"]) == {
        "stage_aware",
        "lightfm",
        "popularity",
        "trending",
        "buy_again",
        "item_knn",
        "tifu_knn",
    }
    keys = {"users", "precision", "recall", "ndcg", "hit_rate", "map", "coverage"}
    for model in result["models"].values():
        assert keys <= set(model["overall"])
        assert set(model["overall"]["ci95"]) == {"precision", "recall", "ndcg", "hit_rate", "map"}
        assert {"cold", "warm"} & set(model["segments"])
        for seg in model["segments"].values():
            assert keys <= set(seg)
            assert 0.0 <= seg["ndcg"] <= 1.0
    ours, pop = result["models"]["stage_aware"]["overall"], result["models"]["popularity"]["overall"]
    # the simulated journeys reward knowing the visitor: even a 3-epoch model must beat the crowd
    assert ours["ndcg"] > pop["ndcg"]
    data = result["data"]
    assert data["train"]["end"] < SPLIT <= data["test"]["start"]
    assert data["rows"] == result["inputs"]["events"]["rows"]
    assert data["train"]["events"] + data["test"]["events"] == result["inputs"]["events"]["events"]
    assert [s["stage"] for s in result["blend"]["stages"]] == list(result["transitions"])
    assert result["examples"]
    for stage, lists in result["examples"].items():
        assert all(e["stage"] == stage and 1 <= len(e["items"]) <= 5 for e in lists)
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    for section in ("Data", "Configuration", "Blend weights per stage", "Example lists per stage"):
        assert f"<h2>{section}</h2>" in html
    assert "stage_aware minus each baseline" in html


def test_evaluate_cold_items_scores_held_out_items_from_features(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cold.json"
    argv = ["evaluate", "--events", str(shop / "events.csv"), "--catalog", str(shop / "catalog.csv")]
    argv += ["--split-at", SPLIT, "--epochs", "3", "--cold-items", "0.3", "--json", str(out)]
    argv += ["--models", "stage_aware,lightfm,popularity"]
    assert main(argv) == 0
    cold = json.loads(out.read_text())["cold_items"]
    assert cold["fraction"] == 0.3
    assert cold["items"] > 0
    assert cold["removed_train_events"] > 0
    assert cold["visitors"] > 0
    assert set(cold["models"]) == {"stage_aware", "lightfm"}  # popularity cannot score given items
    ours, ids_only = cold["models"]["stage_aware"], cold["models"]["lightfm"]
    assert ours["users"] == ids_only["users"] > 0
    # from features, the held-out items are ranked far better than by ids that never saw an event
    assert ours["auc"] > 0.6
    assert ours["auc"] > ids_only["auc"] + 0.05
    assert 0.0 <= ours["precision"] <= 1.0
    err = capsys.readouterr().err
    assert "cold items:" in err
    assert "auc" in err
    # the other models' metrics are over the items left in training
    assert 0.0 < json.loads(out.read_text())["models"]["stage_aware"]["overall"]["ndcg"] <= 1.0


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["train", "--events", "nope.csv", "--out", "{tmp}/m"], ("nope.csv",)),
        (
            ["evaluate", "--events", "{shop}/events.csv", "--split-at", "yesterday"],
            ("--split-at", "yesterday"),
        ),
        (["evaluate", "--events", "{shop}/events.csv"], ("--split-at",)),
        (
            ["evaluate", "--events", "{shop}/events.csv", "--split-at", SPLIT, "--models", "magic"],
            ("--models", "magic"),
        ),
        (["evaluate", "--events", "{shop}/events.csv", "--split-at", "2030-01-01"], ("0 test events",)),
        (["inspect", "{tmp}/nothing-here"], ("nothing-here",)),
        (
            ["evaluate", "--events", "{shop}/events.csv", "--split-at", SPLIT, "--cold-items", "1.5"],
            ("--cold-items", "1.5"),
        ),
        (
            ["evaluate", "--events", "{shop}/events.csv", "--split-at", SPLIT, "--cold-items", "0.0001"],
            ("--cold-items 0.0001", "at least 2"),
        ),
        (["train", "--events", "{shop}/events.csv", "--out", "{tmp}/m", "--preset", "nope"], ("--preset",)),
        (["simulate", "--out", "{tmp}/s", "--visitors", "0"], ("--visitors",)),
        (
            ["evaluate", "--events", "{shop}/events.csv", "--split-at", SPLIT, "--models", "stage-aware"],
            (
                "unknown model 'stage-aware' (expected one of: stage_aware, lightfm,",
                "did you mean stage_aware?",
            ),
        ),
        (
            ["train", "--events", "{shop}/events.csv", "--events", "{shop}", "--out", "{tmp}/m"],
            ("events.csv: named twice (through", "would count twice"),
        ),
    ],
)
def test_user_errors_are_one_line_with_exit_2(
    argv: list[str], needles: tuple[str, ...], shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.format(shop=shop, tmp=tmp_path) for a in argv]
    _one_line_error(capsys, argv, *needles)


def test_bad_row_names_file_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "visitor_id,item_id,event,timestamp\nv,i,product_view,2024-01-01\nv,i,teleport,2024-01-02\n"
    )
    _one_line_error(
        capsys, ["train", "--events", str(bad), "--out", str(tmp_path / "m")], "bad.csv:3", "event"
    )


def test_too_little_data_for_the_blend_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    otto = Path(__file__).parents[1] / "fixtures" / "otto-sample.jsonl"
    argv = ["evaluate", "--preset", "otto", "--events", str(otto), "--split-at", "2022-08-20", "--k", "5"]
    _one_line_error(capsys, argv, "too little data to fit the blend", "2022-08-17")


def test_train_reads_repeated_events_and_directories_and_says_what(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (shop / "events.csv").read_text().splitlines(keepends=True)
    head, body = lines[0], lines[1:]
    half = len(body) // 2
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "1.csv").write_text(head + "".join(body[:half]))
    (exports / "2.csv").write_text(head + "".join(body[half:]))
    first = tmp_path / "first.csv"
    first.write_text(head + body[0])
    args = ["train", "--events", str(first), "--events", str(exports), "--catalog", str(shop / "catalog.csv")]
    assert main([*args, "--out", str(tmp_path / "m"), "--epochs", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["events"] == len(body) + 1  # every file, not the last one only
    load = info["load"]
    assert [(Path(f["path"]).name, f["rows"]) for f in load["files"]] == [
        ("first.csv", 1),
        ("1.csv", half),
        ("2.csv", len(body) - half),
    ]
    assert (load["rows"], load["events"], load["filtered"]) == (len(body) + 1, len(body) + 1, {})
    assert load["catalog"] == str(shop / "catalog.csv")

    assert main([*args, "--out", str(tmp_path / "m"), "--epochs", "2"]) == 0
    text = capsys.readouterr().out
    assert f"read 3 files (native): {len(body) + 1:,} rows -> {len(body) + 1:,} events; filtered none" in text
    assert f"1.csv: {half:,} rows (csv)" in text
    assert "published" in text


def test_evaluate_prints_and_writes_what_it_read(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--events", str(shop / "events.csv"), "--split-at", SPLIT, "--k", "5"]
    argv += ["--epochs", "2", "--models", "popularity,buy_again", "--json", str(out)]
    assert main(argv) == 0
    n = len((shop / "events.csv").read_text().splitlines()) - 1
    err = capsys.readouterr().err
    assert f"read 1 file (native): {n:,} rows -> {n:,} events; filtered none" in err
    inputs = json.loads(out.read_text())["inputs"]
    assert list(inputs) == ["events"]
    assert inputs["events"]["files"] == [{"path": str(shop / "events.csv"), "rows": n, "format": "csv"}]


def test_evaluate_train_test_accept_several_files(
    shop: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = (shop / "events.csv").read_text().splitlines(keepends=True)
    head, body = lines[0], lines[1:]
    before = [r for r in body if r.split(",")[3] < SPLIT]
    after = [r for r in body if r.split(",")[3] >= SPLIT]
    paths = {}
    for name, rows in {"a": before[::2], "b": before[1::2], "t": after}.items():
        paths[name] = tmp_path / f"{name}.csv"
        paths[name].write_text(head + "".join(rows))
    out = tmp_path / "eval.json"
    argv = ["evaluate", "--train", str(paths["a"]), "--train", str(paths["b"]), "--test", str(paths["t"])]
    argv += ["--k", "5", "--epochs", "2", "--models", "popularity", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert (result["train_events"], result["test_events"]) == (len(before), len(after))
    assert [f["rows"] for f in result["inputs"]["train"]["files"]] == [len(before[::2]), len(before[1::2])]
    assert result["split"] == "train a.csv + b.csv / test t.csv"
    err = capsys.readouterr().err
    assert "train: read 2 files (native)" in err
    assert "test: read 1 file (native)" in err


@pytest.mark.parametrize(
    ("name", "text", "needles"),
    [
        ("e.csv", "visitor_id,item_id,event,timestamp\nv,i,add-to-cart,2024-01-01\n",
         ("e.csv:2 column 'event': unknown event 'add-to-cart' (expected one of: page_view,",
          "add_to_cart,", "did you mean add_to_cart?")),
        ("u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n",
         ("u.data: looks like MovieLens ratings", "use --preset movielens-100k")),
    ],
)  # fmt: skip
def test_input_hints_are_one_line_with_exit_2(
    tmp_path: Path, name: str, text: str, needles: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    _one_line_error(capsys, ["train", "--events", str(path), "--out", str(tmp_path / "m")], *needles)


def test_a_semicolon_file_under_a_comma_mapping_gets_a_delimiter_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "e.csv"
    events.write_text("visitor_id;item_id;event;timestamp\nv;i;purchase;2024-01-01\n")
    mapping = tmp_path / "m.json"
    mapping.write_text('{"delimiter": ","}')
    argv = ["train", "--events", str(events), "--mapping", str(mapping), "--out", str(tmp_path / "m")]
    _one_line_error(capsys, argv, "e.csv:1: the header looks separated by ';'", '"delimiter": ";"')


def test_models_list_and_prune(models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    own = tmp_path / "models"
    shutil.copytree(models_dir, own, symlinks=True)
    (version,) = artifact.list_versions(own)
    capsys.readouterr()
    assert main(["models", "list", str(own), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["version"] == version
    assert row["latest"] is True
    assert row["items"] == 150
    assert row["bytes"] > 0
    assert main(["models", "prune", str(own), "--keep", "1"]) == 0
    assert "removed 0 version(s); 1 left" in capsys.readouterr().out
    _one_line_error(capsys, ["models", "prune", str(own), "--keep", "0"], "--keep 0")
    _one_line_error(
        capsys, ["models", "prune", str(own), "--keep", "1", "--protect", "nope"], "--protect nope"
    )
    _one_line_error(capsys, ["models", "list", str(own / version)], "a single model version")
