"""Rewrite the generated regions of README.md, each from its one source, so the README cannot drift.

Usage (from the repository root; ``make readme``):
    python -m scripts.readme                       # rewrite README.md
    python -m scripts.readme --check               # exit 1 if routes or settings differ from the code
    python -m scripts.readme --examples demo/models  # also regenerate the example request and answer

A region is the text between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``:
- ``routes``: every route with the API-key scope it needs (``service.openapi_docs.route_docs``: the scopes
  each route declares, which the guard enforces and the OpenAPI descriptions state);
- ``settings``: every ``JOURNEYREC_*`` variable with its default, allowed values and meaning (the
  ``Settings`` struct, its field constraints and the comment above each field);
- ``bench``: the latest ``make bench`` figures and machine (``reports/bench.json``);
- ``eval``: the latest ``make eval`` figures (``reports/*.json`` from ``journeyrec evaluate --json``);
- ``chaos``: the latest ``make chaos`` figures (``reports/chaos.json``; a ``--quick`` run is not shown);
- ``example``: an event body and the recommendation answer a real call gave (``--examples MODELS_DIR``).

``bench``, ``eval``, ``chaos`` and ``example`` depend on local runs: a region whose source is absent
(``reports/`` is git-ignored) is kept as it is, and ``--check`` compares only ``routes`` and ``settings``.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import inspect
import io
import re
import sys
import time
import tokenize
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from scripts.bench_report import BENCH_JSON, BenchReport, Machine, read_report
from service.app import create_app
from service.openapi_docs import route_docs
from service.settings import ENV, Settings, load_settings
from training.evaluate import EvalResult

README = Path("README.md")
REPORTS = Path("reports")
CHECKED = ("routes", "settings")
CHAOS_JSON = "chaos.json"  # scripts.chaos's report
_IGNORED_COMMENTS = ("noqa", "type:", "fmt:", "pragma")


class ReadmeError(Exception):
    """The README or a source cannot be turned into a table; the message says which and why."""


# -- regions ---------------------------------------------------------------------------------------------


def _markers(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- generated:{name} -->\n)(.*?)(<!-- /generated:{name} -->)", re.DOTALL)


def region(text: str, name: str) -> str:
    m = _markers(name).search(text)
    if m is None:
        raise ReadmeError(f"README has no region <!-- generated:{name} --> ... <!-- /generated:{name} -->")
    return m.group(2)


def replace_region(text: str, name: str, body: str) -> str:
    region(text, name)  # raises when the markers are missing
    content = body.strip("\n") + "\n"
    return _markers(name).sub(lambda m: m.group(1) + content + m.group(3), text, count=1)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- routes ----------------------------------------------------------------------------------------------

_DOC_KEY = "readme-generator-key-0123456789"


def routes_table() -> str:
    settings = load_settings({"api_keys": f"{_DOC_KEY}:read"}, environ={})
    rows = [[r.method, f"`{r.path}`", r.scope_text, r.summary] for r in route_docs(create_app(settings))]
    return _table(["method", "path", "API-key scope", "what"], rows)


# -- settings --------------------------------------------------------------------------------------------


def field_comments(cls: type) -> dict[str, str]:
    """Field name -> the comment block directly above the field plus any comment at the end of its line
    (tool directives such as ``noqa`` left out), read from the class's source."""
    path = inspect.getsourcefile(cls)
    if path is None:
        raise ReadmeError(f"no source file for {cls.__name__}")
    source = Path(path).read_text(encoding="utf-8")
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if not text.startswith(_IGNORED_COMMENTS):
                comments[tok.start[0]] = text
    node = next(
        (n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__),
        None,
    )
    if node is None:
        raise ReadmeError(f"class {cls.__name__} not found in {path}")
    out: dict[str, str] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        above: list[str] = []
        n = stmt.lineno - 1
        while n >= 1 and lines[n - 1].lstrip().startswith("#"):
            if n in comments:
                above.insert(0, comments[n])
            n -= 1
        end = stmt.end_lineno or stmt.lineno
        trailing = [comments[i] for i in range(stmt.lineno, end + 1) if i in comments]
        out[stmt.target.id] = " ".join(above + trailing)
    return out


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list | frozenset | set) and not value:
        return "none"
    return f"`{_number(value)}`"


def _values(prop: Mapping[str, Any]) -> str:
    """Allowed values of one JSON-schema property, in words."""
    if "anyOf" in prop:
        alternatives = [p for p in prop["anyOf"] if p.get("type") != "null"]
        return _values(alternatives[0]) if len(alternatives) == 1 else "see meaning"
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type")
    if kind == "boolean":
        return "`true`/`false` (or 1/0, yes/no, on/off)"
    if kind in ("integer", "number"):
        lo = ("≥", prop["minimum"]) if "minimum" in prop else (">", prop.get("exclusiveMinimum"))
        hi = ("≤", prop["maximum"]) if "maximum" in prop else ("<", prop.get("exclusiveMaximum"))
        noun = "integer" if kind == "integer" else "number"
        if lo[1] is not None and hi[1] is not None and lo[0] == "≥" and hi[0] == "≤":
            return f"{noun} {_number(lo[1])}–{_number(hi[1])}"
        bounds = [f"{op} {_number(v)}" for op, v in (lo, hi) if v is not None]
        return " ".join([noun, ", ".join(bounds)]) if bounds else noun
    if kind == "string":
        return f"text matching `{prop['pattern']}`" if "pattern" in prop else "text"
    return "see meaning"


def settings_table(cls: type[msgspec.Struct] = Settings, env: Mapping[str, str] = ENV) -> str:
    """One row per field of the settings struct: its variable, default, allowed values and meaning."""
    comments = field_comments(cls)
    schema = msgspec.json.schema(cls)
    props = schema["$defs"][cls.__name__]["properties"]
    hints = typing.get_type_hints(cls)
    rows: list[list[str]] = []
    problems: list[str] = []
    for field in msgspec.structs.fields(cls):
        name = field.name
        if name not in env:
            problems.append(f"{name}: no environment variable in service.settings.ENV")
            continue
        if not comments.get(name):
            problems.append(f"{name}: no comment above the field to say what it means")
            continue
        default = field.default if field.default is not msgspec.NODEFAULT else None
        values = _values(props[field.encode_name])
        if typing.get_origin(hints[name]) is Literal:  # in the order the code lists them (the schema sorts)
            values = ", ".join(f"`{v}`" for v in typing.get_args(hints[name]))
        rows.append([f"`{env[name]}`", _default(default), values, comments[name]])
    if problems:
        raise ReadmeError(f"{cls.__name__}: " + "; ".join(problems))
    return _table(["variable", "default", "values", "meaning"], rows)


# -- measured --------------------------------------------------------------------------------------------


def _machine(m: Machine) -> str:
    return f"{m.cpu}, {m.cores} cores, Python {m.python}, {m.system}"


def bench_table(report: BenchReport) -> str:
    rows: list[list[str]] = []
    runs: list[tuple[str, Machine, str]] = []
    if report.train is not None:
        t = report.train.figures
        runs.append(("`bench_train`", report.train.machine, report.train.date))
        rows.append(
            [
                (
                    f"`train` on {t.events:,} simulated events ({t.visitors:,} visitors, {t.items:,} "
                    f"items), {t.threads} threads"
                ),
                f"train+publish {t.train_publish_s:.1f} s; loading {t.load_s:.1f} s",
            ]
        )
    if report.service is not None:
        s = report.service.figures
        runs.append(("`bench_service`", report.service.machine, report.service.date))
        at = f"{s.items:,} items"
        rows += [
            [
                f"batched ingest over HTTP into Redis ({s.workers} workers)",
                f"{s.ingest_events_per_s:,.0f} events/s",
            ],
            *(
                [
                    [
                        f"Redis memory per visitor after that ingest ({s.events_per_visitor} events each)",
                        (
                            f"{s.bytes_per_visitor:,.0f} bytes ({s.bytes_per_visitor * 1e6 / 2**30:,.1f} GiB "
                            f"per million visitors)"
                        ),
                    ]
                ]
                if s.bytes_per_visitor is not None
                else []
            ),
            [
                f"recommend at {at}, concurrency 1 ({s.latency_client}, {s.workers} workers, Redis)",
                f"p50 {s.p50_ms:.2f} ms, p99 {s.p99_ms:.2f} ms",
            ],
            [
                f"recommend at saturation ({s.saturation_client}); no served lists logged",
                f"{s.saturation_rps:,.0f} req/s",
            ],
            *(
                [
                    [
                        "the same, every served list logged for attribution",
                        f"p50 {s.logged_p50_ms:.2f} ms; {s.logged_saturation_rps:,.0f} req/s",
                    ]
                ]
                if s.logged_p50_ms is not None and s.logged_saturation_rps is not None
                else []
            ),
            *(
                [
                    [
                        "the same, lists logged and an experiment on every recommendation",
                        f"p50 {s.experiment_p50_ms:.2f} ms; {s.experiment_saturation_rps:,.0f} req/s",
                    ]
                ]
                if s.experiment_p50_ms is not None and s.experiment_saturation_rps is not None
                else []
            ),
            *(
                [
                    [
                        (
                            "the two alternated request by request (httpx client, one connection each): "
                            "lists logged and the experiment vs neither"
                        ),
                        f"p50 {s.paired_both_p50_ms:.2f} ms vs {s.paired_plain_p50_ms:.2f} ms",
                    ]
                ]
                if s.paired_both_p50_ms is not None and s.paired_plain_p50_ms is not None
                else []
            ),
            *(
                [
                    [
                        (
                            f"the same (lists logged) with {s.live_items:,} live catalog items (half new, "
                            "half patched) and 20 merchandising rules"
                        ),
                        (
                            f"p50 {s.live_p50_ms:.2f} ms, p99 {s.live_p99_ms:.2f} ms; "
                            f"{s.live_saturation_rps:,.0f} req/s"
                        ),
                    ]
                ]
                if s.live_p50_ms is not None and s.live_p99_ms is not None and s.live_saturation_rps
                else []
            ),
            *(
                [
                    [
                        "a PATCH of an item served by every worker",
                        f"{s.patch_visible_s:.2f} s after it answered",
                    ]
                ]
                if s.patch_visible_s is not None
                else []
            ),
            [
                f"whole recommend call in-process at {at}",
                (
                    f"{s.call_ms:.2f} ms with candidate pre-selection; {s.call_exhaustive_ms:.2f} ms "
                    f"scoring every item; {s.call_predict_ms:.2f} ms with `LightFM.predict`"
                ),
            ],
            [
                "scoring step vs `LightFM.predict` (every item)",
                (
                    f"{s.score_ms:.2f} ms vs {s.score_predict_ms:.2f} ms "
                    f"({s.score_predict_ms / s.score_ms:.0f}×)"
                ),
            ],
            [
                "candidate pre-selection vs scoring every item",
                (
                    f"top 10 identical in {round(s.identical * s.probes):,} of {s.probes:,} contexts; "
                    f"the cluster probe finds {s.probe_recall:.1%} of a visitor's 10 best items by "
                    "factor score"
                ),
            ],
            [f"worker start at {at}", f"ready in {s.ready_s:.1f} s"],
        ]
    machines = {m for _name, m, _date in runs}
    if len(machines) == 1:
        days = sorted({date[:10] for _name, _m, date in runs})
        dates = (
            days[0] if len(days) == 1 else " and ".join(f"{name} on {date[:10]}" for name, _m, date in runs)
        )
        head = f"`make bench` on {_machine(runs[0][1])} ({dates}):"
    else:
        head = "`make bench` " + "; ".join(f"{name} on {_machine(m)} ({d[:10]})" for name, m, d in runs) + ":"
    return head + "\n\n" + _table(["", "figure"], rows)


_BASELINE_FIRST = ("stage_aware", "lightfm")


def eval_results(reports: Path) -> list[tuple[Path, EvalResult]]:
    """Every ``journeyrec evaluate --json`` file in ``reports`` (other JSON files are skipped)."""
    out: list[tuple[Path, EvalResult]] = []
    for path in sorted(reports.glob("*.json")):
        if path.name in (BENCH_JSON.name, CHAOS_JSON):
            continue
        try:
            out.append((path, msgspec.json.decode(path.read_bytes(), type=EvalResult)))
        except msgspec.MsgspecError as e:
            print(f"readme: skipping {path}: not an evaluation result ({e})", file=sys.stderr)
    return out


def eval_table(results: list[tuple[Path, EvalResult]]) -> str:
    rows: list[list[str]] = []
    for path, r in results:
        split = r.split + (", `--exclude-seen`" if r.exclude_seen else "")
        c = r.cold_items
        if c is not None:  # a --cold-items run: its figures are among the held-out items
            for field, label in (("auc", "cold-item AUC"), ("precision", f"cold-item P@{c.k}")):
                got = c.models
                cells = [f"{getattr(got[n], field):.3f}" if n in got else "—" for n in _BASELINE_FIRST]
                rows.append([f"{path.stem} ({split}, `--cold-items {c.fraction:g}`)", label, *cells, "—"])
            continue
        for metric, label in (("ndcg", "NDCG"), ("precision", "P")):

            def score(name: str, metric: str = metric, r: EvalResult = r) -> float:
                return float(getattr(r.models[name].overall, metric))

            def shown(name: str, metric: str = metric, r: EvalResult = r) -> str:
                """The figure, with its 95% interval when the run drew one."""
                o = r.models[name].overall
                ci = o.ci95.get(metric)
                return f"{getattr(o, metric):.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

            ours = [shown(n) if n in r.models else "—" for n in _BASELINE_FIRST]
            others = [n for n in r.models if n not in _BASELINE_FIRST]
            best = max(others, key=score, default=None)
            best_cell = "—"
            if best is not None:
                best_cell = f"{best} {shown(best)}"
                d = r.differences.get(best)
                if d is not None and metric in d.overall:
                    dm = d.overall[metric]
                    star = "\\*" if dm.ci95[0] > 0 or dm.ci95[1] < 0 else ""
                    best_cell += f"; difference {dm.value:+.3f} [{dm.ci95[0]:+.3f}, {dm.ci95[1]:+.3f}]{star}"
            rows.append([f"{path.stem} ({split})", f"{label}@{r.k}", *ours, best_cell])
    dates = sorted({_mtime(p) for p, _r in results})
    head = (
        f"`make eval` ({', '.join(dates)}); quality figures do not depend on the machine. In brackets: 95%"
        " paired bootstrap intervals over test visitors; difference: stage_aware minus the best other model,"
        " \\* where its interval excludes 0:"
    )
    return (
        head + "\n\n" + _table(["data (split)", "metric", "stage_aware", "lightfm", "best other model"], rows)
    )


def _mtime(path: Path) -> str:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date().isoformat()


# -- example ---------------------------------------------------------------------------------------------


def example(models_dir: Path) -> str:
    """One event posted to a real app serving ``models_dir`` and the recommendation answer it gave."""
    from litestar.testing import TestClient

    from models.domain import ItemKind
    from models.recommender import Recommender

    model = Recommender.load(models_dir)
    product = next(
        (c for c in model.catalog.items if c.kind is ItemKind.PRODUCT and c.in_stock and c.category), None
    )
    if product is None:
        raise ReadmeError(f"{models_dir}: the model's catalog has no product in stock")
    when = dt.datetime.fromtimestamp(time.time() - 120, dt.UTC).replace(microsecond=0)
    visitor = "v-1001"
    body = {
        "event_id": "e-000001",
        "visitor_id": visitor,
        "item_id": product.item_id,
        "event": "add_to_cart",
        "timestamp": when.isoformat(),
        "session_id": "s-77",
        "channel": "search",
        "country": "uk",
    }
    query = "k=3&n_content=1&placement=cart"
    flags = {"models_dir": str(models_dir), "api_keys": f"{_DOC_KEY}:ingest+read", "log_level": "warning"}
    settings = load_settings(flags, environ={})
    headers = {"X-API-Key": _DOC_KEY}
    with TestClient(create_app(settings)) as client:
        posted = client.post("/v1/events", json=body, headers=headers)
        answer = client.get(f"/v1/visitors/{visitor}/recommendations?{query}", headers=headers)
    for r in (posted, answer):
        if r.status_code != 200:
            raise ReadmeError(f"{r.request.method} {r.request.url.path} answered {r.status_code}: {r.text}")

    def pretty(x: Any) -> str:
        return msgspec.json.format(msgspec.json.encode(x), indent=2).decode()

    return "\n".join(
        [
            '`POST /v1/events` with one event (a batch is `{"events": [...]}`):',
            "",
            "```json",
            pretty(body),
            "```",
            "",
            f"answers `{posted.text}`. Then `GET /v1/visitors/{visitor}/recommendations?{query}` answers:",
            "",
            "```json",
            pretty(answer.json()),
            "```",
        ]
    )


def _bench(reports: Path) -> str | None:
    path = reports / BENCH_JSON.name
    try:
        report = read_report(path)
    except msgspec.MsgspecError as e:
        print(f"readme: skipping {path}: not a benchmark report ({e})", file=sys.stderr)
        return None
    return bench_table(report) if report is not None and (report.train or report.service) else None


def _eval(reports: Path) -> str | None:
    results = eval_results(reports)
    return eval_table(results) if results else None


def _n(x: Any) -> str:
    return f"{x:,}" if isinstance(x, int) else str(x)


def chaos_table(report: dict[str, Any]) -> str:
    """The ``make chaos`` figures (``scripts.chaos``'s report) as a table, one row per scenario run."""
    sc: dict[str, dict[str, Any]] = report.get("scenarios", {})
    rows: list[list[str]] = []
    if "redis_kill" in sc and "lost" in sc["redis_kill"]:
        r = sc["redis_kill"]
        o = r["during_outage"]
        rows.append(
            [
                "`kill -9` of Redis (AOF, `appendfsync always`) under mixed load, restarted from its AOF",
                (
                    f"down {r['redis_down_s']} s: {_n(o['requests'])} answers meanwhile, {_n(o['busy'])} 503 "
                    f"Retry-After + {_n(o['fallback'])} flagged fallbacks, {_n(o['bad'] + o['no_answer'])} "
                    f"other; {_n(r['acknowledged_events'])} events acknowledged, {_n(r['lost'])} lost, "
                    f"{_n(r['stored_twice'])} stored twice (after {_n(r['unacknowledged_events_retried'])} "
                    f"unacknowledged ones were retried); AOF loaded in {r['aof_load_s']} s, first "
                    f"acknowledged ingest {r['first_ack_after_redis_back_s']} s after"
                ),
            ]
        )
    if "worker_kill" in sc and "lost_after_kill" in sc["worker_kill"]:
        r = sc["worker_kill"]
        rows.append(
            [
                "`kill -9` of 1 of 2 workers under mixed load (`JOURNEYREC_RESPAWN_WORKERS`)",
                (
                    f"{_n(r['requests'])} requests: {_n(r['failed_in_flight_at_kill'])} in flight at the "
                    f"kill unanswered, {_n(r['lost_after_kill'])} lost after it, "
                    f"{_n(r.get('busy_after_kill', 0))} 503 Retry-After; a new worker after "
                    f"{r['replaced_after_s']} s, serving after {r['new_worker_beating_after_s']} s"
                ),
            ]
        )
    if "publications" in sc and "failed_requests" in sc["publications"]:
        r = sc["publications"]
        damage = ", ".join(d.replace("_", " ") for d in r["refusals_logged"])
        rows.append(
            [
                f"{r['publications']} model publications under load, {r['damaged']} damaged ({damage})",
                (
                    f"{_n(r['requests'])} requests, {_n(r['failed_requests'])} failed; "
                    f"{r['workers_serving_last_good']} of 2 workers on the last good version (heartbeats "
                    f"{r['heartbeats_on_last_good_s_after_last_publication']} s after the last publication), "
                    "each damaged version refused by every worker"
                ),
            ]
        )
    if "replaced_on_damaged_latest" in sc and "replacement_serves" in sc["replaced_on_damaged_latest"]:
        r = sc["replaced_on_damaged_latest"]
        codes = ", ".join(f"{n} × {c}" for c, n in r["recommendations_on_new_connections"].items())
        rows.append(
            [
                "then a worker replaced while `latest` names the damaged version",
                (
                    f"the new worker serves {r['replacement_serves'] or 'no model'} (the other worker "
                    f"{', '.join(r.get('other_worker_serves', [])) or '-'}); 20 recommendations: {codes}"
                ),
            ]
        )
    if "cluster_master_kill" in sc and "lost" in sc["cluster_master_kill"]:
        r = sc["cluster_master_kill"]
        on = r["during_outage"]
        rows.append(
            [
                "`kill -9` of 1 of 3 Redis Cluster masters under load",
                (
                    f"down {r['master_down_s']} s: its visitors {_n(on['killed_masters_visitors']['busy'])} "
                    f"unavailable, the others {_n(on['other_visitors']['ok'])} ok + "
                    f"{_n(on['other_visitors']['busy'])} unavailable{_by_op(on)}; "
                    f"{_n(r['acknowledged_on_other_masters_checked_while_down'])} acknowledged events on the "
                    "other masters checked while it was down, "
                    f"{_n(r['missing_on_other_masters_while_down'])} missing; "
                    f"{_n(r['acknowledged_events'])} acknowledged in all, {_n(r['lost'])} lost, "
                    f"{_n(r['stored_twice'])} stored twice; errors other than unavailable: "
                    f"{_n(r['answers']['bad'])}"
                    + (
                        f" ({_n(r['errors_after_restart'])} once it was back)"
                        if "errors_after_restart" in r
                        else ""
                    )
                ),
            ]
        )
    failed = [f"{name}: {'; '.join(r['failures'])}" for name, r in sc.items() if r.get("failures")]
    head = f"`make chaos` ({report.get('date', '')[:10]}), {'all checks held' if not failed else 'FAILED'}:"
    lines = [head, "", _table(["fault", "what happened"], rows)]
    if failed:
        lines += ["", *(f"- failed: {_cell(f[:300])}" for f in failed)]
    return "\n".join(lines)


def _by_op(outage: dict[str, Any]) -> str:
    """The other masters' visitors' answers by operation, when the report has them."""
    by_op = outage.get("other_visitors_by_op")
    if not by_op:
        return ""
    parts = [
        f"{op}: {_n(c.get('ok', 0))} ok, {_n(c.get('busy', 0))} unavailable" for op, c in by_op.items() if c
    ]
    return f" ({'; '.join(parts)})"


def _chaos(reports: Path) -> str | None:
    path = reports / CHAOS_JSON
    if not path.is_file():
        return None
    try:
        report = msgspec.json.decode(path.read_bytes())
        return None if report.get("quick", True) else chaos_table(report)
    except (msgspec.MsgspecError, KeyError, TypeError, AttributeError) as e:
        print(f"readme: skipping {path}: not a chaos report ({type(e).__name__}: {e})", file=sys.stderr)
        return None


# -- main ------------------------------------------------------------------------------------------------


def generate(
    text: str, *, reports: Path = REPORTS, examples: Path | None = None, only: tuple[str, ...] | None = None
) -> str:
    """``text`` with its regions regenerated (only the ``only`` ones when given); a region whose source
    is absent keeps its text."""
    makers: dict[str, Callable[[], str | None]] = {
        "routes": routes_table,
        "settings": settings_table,
        "bench": lambda: _bench(reports),
        "eval": lambda: _eval(reports),
        "chaos": lambda: _chaos(reports),
        "example": lambda: example(examples) if examples is not None else None,
    }
    for name, make in makers.items():
        if only is not None and name not in only:
            continue
        body = make()
        if body is not None:
            text = replace_region(text, name, body)
    return text


def check(text: str) -> list[str]:
    """Names of the checked regions whose text differs from what the code generates."""
    fresh = generate(text, only=CHECKED)
    return [name for name in CHECKED if region(fresh, name) != region(text, name)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="exit 1 if routes or settings are out of date")
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--reports", type=Path, default=REPORTS, help="where make bench / make eval write")
    ap.add_argument(
        "--examples", type=Path, default=None, metavar="MODELS_DIR", help="regenerate the example"
    )
    args = ap.parse_args(argv)
    try:
        text = args.readme.read_text(encoding="utf-8")
        if args.check:
            stale = check(text)
            if stale:
                print(f"{args.readme}: out of date: {', '.join(stale)}; run `make readme`", file=sys.stderr)
                return 1
            return 0
        new = generate(text, reports=args.reports, examples=args.examples)
    except ReadmeError as e:
        print(f"readme: {e}", file=sys.stderr)
        return 2
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"{args.readme}: regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
