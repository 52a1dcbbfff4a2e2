"""``journeyrec train | evaluate | simulate | simulate-traffic | inspect``: the data scientist's commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from models import artifact
from models.blend import FEATURE_NAMES, BlendWeights
from models.errors import InvalidInputError
from training import evaluate as evaluation
from training.loaders import PRESETS, LoadSummary, load_mapping, read_events, read_train_test
from training.model_config import config_document, read_config, to_toml
from training.pipeline import config_for, rankers_for, split_stages, train_and_publish
from training.report import write_report
from training.simulate import SimulationConfig, write_simulation
from training.stage_model import StageModelConfig
from training.tables import unknown_name
from training.terminal import column_blocks
from training.traffic import TrafficConfig, run_traffic, summary_lines

err = Console(stderr=True)
out = Console()


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A rich spinner whose text follows the pipeline's progress messages (quiet with --json)."""
    if not enabled:
        yield lambda _m: None
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    # transient: an error message must stay the only line the command leaves behind
    with Progress(*columns, console=err, transient=True) as p:
        task = p.add_task("starting", total=None)
        yield lambda m: p.update(task, description=m)


def _parse_time(value: str, option: str) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"{option}: expected an ISO-8601 date/time or POSIX seconds, got {value!r}"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


EVENTS_HELP = (
    "Events file or directory; repeat for several (read in the order given). A directory means its"
    " events files in name order (native: *.csv *.tsv *.jsonl *.ndjson *.json, optionally .gz)."
)


def _print_summary(console: Console, summary: LoadSummary, title: str = "") -> None:
    lines = summary.lines()
    lines[0] = f"{title}{lines[0]}"
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option(
        "--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Built-in reader for public data."
    )(f)
    f = click.option(
        "--mapping", type=click.Path(dir_okay=False), default=None, help="JSON column/event-name mapping."
    )(f)
    f = click.option(
        "--catalog", type=click.Path(), default=None, help="Catalog CSV/JSONL (optional with a preset)."
    )(f)
    f = click.option("--seed", type=int, default=1, show_default=True)(f)
    f = click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True)(f)
    f = click.option(
        "--epochs", type=click.IntRange(1, 500), default=None, help="LightFM epochs (default 16)."
    )(f)
    f = click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="Model configuration TOML (LightFM, event weights, journey rules, blend, candidates, serving),"
        " applied over the preset's; --epochs wins over it.",
    )(f)
    return f  # noqa: RET504 - the decorator chain reads best as assignments


def _config_name(config_path: str | None) -> str:
    return Path(config_path).name if config_path else ""


def _names(paths: tuple[str, ...]) -> str:
    """The paths' last parts, joined: "a.jsonl + b.jsonl"."""
    return " + ".join(Path(p).name for p in paths)


def _cfg(
    preset: str | None, seed: int, threads: int, epochs: int | None, config_path: str | None, **extra: Any
) -> Any:
    doc = read_config(Path(config_path)) if config_path else None
    cfg = config_for(preset, doc, config_path or "", seed=seed, threads=threads, **extra)
    if epochs is not None:
        cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=epochs))
    return cfg


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Writes events.csv, catalog.csv.",
)
@click.option("--visitors", type=click.IntRange(1, 10_000_000), default=20_000, show_default=True)
@click.option("--items", type=click.IntRange(10, 10_000_000), default=2_000, show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=120, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(out_dir: str, visitors: int, items: int, days: int, seed: int, as_json: bool) -> None:
    """Write a simulated storefront (events.csv, catalog.csv) in the native format."""
    cfg = SimulationConfig(visitors=visitors, items=items, days=days, seed=seed)
    t0 = time.perf_counter()
    summary = write_simulation(cfg, Path(out_dir))
    took = time.perf_counter() - t0
    if as_json:
        click.echo(json.dumps({**msgspec.to_builtins(summary), "seconds": round(took, 2)}))
    else:
        out.print(f"wrote {out_dir}/events.csv and catalog.csv in {took:.1f} s")
        out.print(msgspec.to_builtins(summary))


@click.command("simulate-traffic")
@click.option("--url", required=True, help="The running server, e.g. http://127.0.0.1:8000.")
@click.option("--api-key", required=True, help="A key with the ingest and read scopes.")
@click.option("--visitors", type=click.IntRange(1, 10_000_000), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=16, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Visitors and their reactions.")
@click.option("--days", type=click.IntRange(1, 3650), default=30, show_default=True)
@click.option("--placement", default="home", show_default=True, help="Placement asked for the lists.")
@click.option(
    "--items",
    type=click.IntRange(10, 10_000_000),
    default=2_000,
    show_default=True,
    help="Catalog size of the `simulate` run the served model was trained on.",
)
@click.option(
    "--shop-seed", type=int, default=1, show_default=True, help="Seed of that `simulate` run (its catalog)."
)
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--n-content", type=click.IntRange(0, 50), default=3, show_default=True)
@click.option("--prefix", default="", help="Visitor id prefix (default sim<seed>).")
@click.option(
    "--out", "out_path", type=click.Path(dir_okay=False), default=None, help="Write the summary as JSON."
)
def simulate_traffic(url: str, out_path: str | None, **options: Any) -> None:
    """Drive a running server with simulated visitors who react to what they are shown."""
    cfg = TrafficConfig(url=url.rstrip("/"), **options)  # every other option is a TrafficConfig field
    with _progress(True) as say:
        summary = asyncio.run(run_traffic(cfg, progress=say))
    for line in summary_lines(summary):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_bytes(msgspec.json.format(msgspec.json.encode(summary)))


@click.command()
@click.option("--events", type=click.Path(), multiple=True, required=True, help=EVENTS_HELP)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Models directory.")
@_data_options
@click.option("--json", "as_json", is_flag=True, help="Print the manifest summary and what was read as JSON.")
def train(
    events: tuple[str, ...],
    out_dir: str,
    catalog: str | None,
    mapping: str | None,
    preset: str | None,
    seed: int,
    threads: int,
    epochs: int | None,
    config_path: str | None,
    as_json: bool,
) -> None:
    """Train the stage-aware model on EVENTS and publish it under OUT (moves OUT/latest)."""
    cfg = _cfg(preset, seed, threads, epochs, config_path)
    t0 = time.perf_counter()
    with _progress(not as_json) as say:
        say("loading events")
        log, summary = read_events(
            list(events),
            catalog=catalog,
            preset=preset,
            mapping=load_mapping(mapping) if mapping else None,
        )
        say(f"loaded {log.n_events:,} events, {log.n_visitors:,} visitors, {log.n_items:,} items")
        path = train_and_publish(log, Path(out_dir), cfg, say, config_source=_config_name(config_path))
    took = time.perf_counter() - t0
    m = artifact.read_manifest(path)
    info = {"version": m.version, "path": str(path), "seconds": round(took, 2), **m.metrics}
    if as_json:
        click.echo(json.dumps({**info, "load": msgspec.to_builtins(summary)}))
    else:  # after the work: an error must stay the only line the command leaves behind
        _print_summary(out, summary)
        out.print(f"published [bold]{m.version}[/] at {path} in {took:.1f} s ({log.n_events:,} events)")


@click.command()
@click.option("--events", type=click.Path(), multiple=True, help=f"{EVENTS_HELP} Split with --split-at.")
@click.option("--split-at", default=None, help="Train strictly before this time, test at/after it.")
@click.option(
    "--train",
    "train_path",
    type=click.Path(),
    multiple=True,
    help="Training events (with --test); as --events.",
)
@click.option(
    "--test", "test_path", type=click.Path(), multiple=True, help="Test events (with --train); as --events."
)
@_data_options
@click.option("--k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--exclude-seen", is_flag=True, help="Never recommend items the visitor had in training.")
@click.option("--models", "only", default=None, help="Comma-separated subset of models to run.")
@click.option(
    "--cold-items",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=None,
    help="Hold this share of products (seeded by --seed) out of training; rank them among themselves"
    " from features only (AUC, precision@k).",
)
@click.option(
    "--resamples",
    type=click.IntRange(0, 1_000_000),
    default=evaluation.RESAMPLES,
    show_default=True,
    help="Paired bootstrap resamples of the test visitors (seeded by --seed) for the 95%% intervals;"
    " 0: none.",
)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON."
)
@click.option(
    "--report", "report_path", type=click.Path(dir_okay=False), default=None, help="Write an HTML report."
)
def evaluate(
    events: tuple[str, ...],
    split_at: str | None,
    train_path: tuple[str, ...],
    test_path: tuple[str, ...],
    catalog: str | None,
    mapping: str | None,
    preset: str | None,
    seed: int,
    threads: int,
    epochs: int | None,
    config_path: str | None,
    k: int,
    exclude_seen: bool,
    only: str | None,
    cold_items: float | None,
    resamples: int,
    json_path: str | None,
    report_path: str | None,
) -> None:
    """Train every model on the training part and score all of them on the test part in one run."""
    cmap = load_mapping(mapping) if mapping else None
    inputs: dict[str, LoadSummary]
    if events and split_at and not (train_path or test_path):
        at = _parse_time(split_at, "--split-at")
        full, summary = read_events(list(events), catalog=catalog, preset=preset, mapping=cmap)
        train_log, test_log = evaluation.split_at(full, at)
        split_desc = f"time split at {split_at}"
        dataset = _names(events)
        inputs = {"events": summary}
    elif train_path and test_path and not (events or split_at):
        train_log, test_log, train_summary, test_summary = read_train_test(
            list(train_path), list(test_path), catalog=catalog, preset=preset, mapping=cmap
        )
        at = float(train_log.ts.max()) + 1.0
        split_desc = f"train {_names(train_path)} / test {_names(test_path)}"
        dataset = Path(train_path[0]).parent.name
        inputs = {"train": train_summary, "test": test_summary}
    else:
        raise InvalidInputError("give either --events with --split-at, or --train with --test")
    if train_log.n_events == 0 or test_log.n_events == 0:
        raise InvalidInputError(
            f"the split leaves {train_log.n_events} training and {test_log.n_events} test events"
        )
    cold = None
    if cold_items is not None:
        train_log, cold = evaluation.hold_out_items(train_log, cold_items, seed)
    cfg = _cfg(preset, seed, threads, epochs, config_path, exclude_seen=exclude_seen)
    with _progress(True) as say:
        rankers = rankers_for(cfg, say)
        if only:
            wanted = {s.strip() for s in only.split(",")}
            unknown = wanted - {r.name for r in rankers}
            if unknown:
                known = [r.name for r in rankers]
                raise InvalidInputError(f"--models: {unknown_name('model', sorted(unknown)[0], known)}")
            rankers = [r for r in rankers if r.name in wanted]
        end = float(test_log.ts.max()) + 1.0
        full_log = train_log.concat(test_log)
        at_split, at_end = split_stages(train_log, full_log, at, end, cfg)
        result = evaluation.evaluate(
            rankers,
            train_log,
            test_log,
            k=k,
            now=at,
            exclude_seen=exclude_seen,
            positive=cfg.positive,
            dataset=dataset,
            split=split_desc,
            stage_of=at_split,
            stage_at_end=at_end,
            progress=say,
            cold=cold,
            resamples=resamples,
            seed=seed,
            inputs=inputs,
        )
    configuration = {"stage_aware": config_document(cfg)}
    configuration.update({r.name: msgspec.to_builtins(r.params) for r in rankers if hasattr(r, "params")})
    result = msgspec.structs.replace(result, configuration=configuration)
    for name, summary in inputs.items():  # after the work, as in train
        _print_summary(err, summary, "" if name == "events" else f"{name}: ")
    err.print(evaluation.format_table(result, err.width))
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_bytes(msgspec.json.format(msgspec.json.encode(result)))
    if report_path:
        write_report(result, Path(report_path))


@click.command()
@click.argument("model_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(model_dir: str, as_json: bool) -> None:
    """Verify a model (or MODELS_DIR/latest) and show its manifest and what the blend learned."""
    bundle = artifact.load(Path(model_dir))
    m = bundle.manifest
    if as_json:
        click.echo(msgspec.json.encode(m).decode())
        return
    out.print(f"[bold]{m.version}[/]  created {m.created_at}  verified: {len(m.files)} files, sha256 ok")
    out.print(f"items {m.n_items:,}  visitors {m.n_visitors:,}")
    out.print(f"data fingerprint {m.data_fingerprint}")
    out.print(blend_table(m.blend, out.width))
    name = m.metrics.get("config")
    source = f"trained with --config {name}" if name else "trained without --config"
    try:
        cfg = msgspec.convert(m.parameters, StageModelConfig)
    except msgspec.ValidationError:  # parameters of a format this version does not read: raw
        out.print(f"\nconfiguration ({source}):", markup=False)
        out.print(msgspec.json.format(msgspec.json.encode(m.parameters)).decode(), markup=False)
        return
    out.print(f"\nconfiguration, in the format --config takes ({source}):", markup=False)
    out.print(to_toml(config_document(cfg)), markup=False, highlight=False, soft_wrap=True)


def blend_table(blend: BlendWeights, width: int) -> Any:
    """What the blend learned, one column per stage (as many tables as ``width`` needs): positives, what
    it was fitted on, then each feature's weight."""
    labels = [["positives"], ["fitted on"], *([f] for f in FEATURE_NAMES)]
    columns = {
        s.stage: [f"{s.positives:,}", s.fitted_on, *(f"{s.weights.get(f, 0.0):+.2f}" for f in FEATURE_NAMES)]
        for s in blend.stages
    }
    title = "Blend weights per stage (fitted on the validation window)"
    return column_blocks(title, [""], labels, columns, width)


@click.group("models")
def models_group() -> None:
    """Published model versions in a models directory: list them, prune old ones."""


class VersionRow(msgspec.Struct, frozen=True):
    """One published version as ``models list --json`` prints it."""

    version: str
    latest: bool
    created_at: str
    items: int
    visitors: int
    trained_until: float
    fit_seconds: float | None
    bytes: int


def _version_rows(models_dir: Path) -> list[VersionRow]:
    latest = artifact.latest_name(models_dir)
    rows = []
    for v in artifact.list_versions(models_dir):
        m = artifact.read_manifest(models_dir / v)
        fit = m.metrics.get("fit_seconds")
        rows.append(
            VersionRow(
                version=v,
                latest=v == latest,
                created_at=m.created_at,
                items=m.n_items,
                visitors=m.n_visitors,
                trained_until=m.trained_until,
                fit_seconds=float(fit) if isinstance(fit, int | float) else None,
                bytes=sum(f.bytes for f in m.files.values()),
            )
        )
    return rows


def _models_dir(path: str) -> Path:
    models_dir = Path(path)
    if not models_dir.is_dir():
        raise InvalidInputError(f"MODELS_DIR {path}: not a directory")
    if (models_dir / artifact.MANIFEST).is_file():
        raise InvalidInputError(f"MODELS_DIR {path}: a single model version, not a directory of versions")
    return models_dir


@models_group.command("list")
@click.argument("models_dir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
def models_list(models_dir: str, as_json: bool) -> None:
    """Published versions, oldest first; `latest` marked (the version every worker follows)."""
    rows = _version_rows(_models_dir(models_dir))
    if as_json:
        click.echo(msgspec.json.encode(rows).decode())
        return
    table = Table(title=f"{len(rows)} published versions in {models_dir}", box=None)
    for col in ("version", "latest", "created", "items", "visitors", "trained until", "size"):
        table.add_column(col)
    for r in rows:
        until = dt.datetime.fromtimestamp(r.trained_until, dt.UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(
            r.version,
            "latest" if r.latest else "",
            r.created_at,
            f"{r.items:,}",
            f"{r.visitors:,}",
            until,
            f"{r.bytes / 1e6:,.1f} MB",
        )
    out.print(table)


@models_group.command("prune")
@click.argument("models_dir", type=click.Path())
@click.option("--keep", type=int, required=True, help="How many of the newest versions to keep (>= 1).")
@click.option(
    "--protect", multiple=True, help="A version never to remove (repeatable), e.g. one a worker serves."
)
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
def models_prune(models_dir: str, keep: int, protect: tuple[str, ...], dry_run: bool) -> None:
    """Remove all but the newest --keep versions; never the one `latest` names nor a --protect one."""
    directory = _models_dir(models_dir)
    unknown = sorted(set(protect) - set(artifact.list_versions(directory)))
    if unknown:
        raise InvalidInputError(f"--protect {unknown[0]}: not a published version in {models_dir}")
    removed = artifact.prune(directory, keep, protect=protect, dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    left = len(artifact.list_versions(directory))
    click.echo(f"{verb} {len(removed)} version(s){': ' + ', '.join(removed) if removed else ''}; {left} left")


def register(group: click.Group) -> None:
    for cmd in (train, evaluate, simulate, simulate_traffic, inspect, models_group):
        group.add_command(cmd)
