"""A self-contained HTML report of an evaluation: tables plus plots embedded as PNG data URIs."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")  # no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from models.blend import FEATURE_NAMES, BlendWeights
from models.bootstrap import excludes_zero
from models.domain import STAGES
from models.metrics import METRICS
from training.evaluate import Difference, EvalResult
from training.model_config import to_toml


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grouped_bars(
    groups: list[str],
    series: dict[str, list[float]],
    title: str,
    ylabel: str,
    intervals: dict[str, list[tuple[float, float] | None]] | None = None,
) -> str:
    """One bar group per entry of ``groups``, one bar per series (model); ``intervals`` (per series, per
    group, (lo, hi) or None) drawn as error bars."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 3.8))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        spans = (intervals or {}).get(name)
        err = None
        if spans is not None and all(sp is not None for sp in spans):
            v = np.asarray(values)
            lo = np.array([sp[0] for sp in spans if sp is not None])
            hi = np.array([sp[1] for sp in spans if sp is not None])
            err = np.stack([np.maximum(v - lo, 0), np.maximum(hi - v, 0)])
        ax.bar(x + i * width - 0.4 + width / 2, values, width, label=name, yerr=err, capsize=2)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    # outside the axes, right of them (savefig's tight box keeps it): a legend never covers a bar
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _transition_chart(result: EvalResult) -> str:
    names = [s.value for s in STAGES]
    m = np.array([[result.transitions[a][b] for b in names] for a in names], dtype=float)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("stage at the end of the test window")
    ax.set_ylabel("stage at the split")
    ax.set_title("Stage transitions of test visitors")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{int(m[i, j]):,}", ha="center", va="center", fontsize=8)
    return _png(fig)


def _metric_cell(value: float, ci: tuple[float, float] | None) -> str:
    lo_hi = "" if ci is None else f"<br><small>{ci[0]:.4f}&ndash;{ci[1]:.4f}</small>"
    return f"<td>{value:.4f}{lo_hi}</td>"


def _table(result: EvalResult) -> str:
    k = result.k
    head = "".join(f"<th>{m}@{k}</th>" for m in METRICS)
    rows = []
    for name, r in result.models.items():
        o = r.overall
        cells = "".join(_metric_cell(getattr(o, m), o.ci95.get(m)) for m in METRICS)
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{o.users:,}</td>{cells}"
            f"<td>{o.coverage:.3f}</td><td>{r.fit_seconds:.1f}</td></tr>"
        )
    return (
        f"<table><tr><th>model</th><th>users</th>{head}<th>coverage</th><th>fit s</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _diff_cell(d: Difference) -> str:
    """A difference, bold with a star when its interval excludes 0, with the interval below."""
    text = f"{d.value:+.4f}"
    if excludes_zero(d.ci95):
        text = f'<strong class="sig">{text}&#8202;*</strong>'
    return f"<td>{text}<br><small>{d.ci95[0]:+.4f}&ndash;{d.ci95[1]:+.4f}</small></td>"


def _differences(result: EvalResult) -> str:
    """The reference minus each baseline, overall per metric and per segment (ndcg), with intervals."""
    b, diffs = result.bootstrap, result.differences
    if b is None or not diffs:
        return ""
    k = result.k
    head = "".join(f"<th>{m}@{k}</th>" for m in METRICS)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(_diff_cell(c.overall[m]) for m in METRICS) + "</tr>"
        for name, c in diffs.items()
    )
    segments = list(next(iter(diffs.values())).segments)
    ref = result.models[b.reference]
    seg_head = "".join(f"<th>{html.escape(s)} ({ref.segments[s].users:,})</th>" for s in segments)
    seg_rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(_diff_cell(c.segments[s]["ndcg"]) for s in segments)
        + "</tr>"
        for name, c in diffs.items()
    )
    ref_name = html.escape(b.reference)
    return f"""<h2>Is it real? {ref_name} minus each baseline</h2>
<p>Differences of means over the same test visitors, with 95% paired bootstrap intervals: the test visitors
resampled with replacement {b.resamples:,} times (seed {b.seed}), every model scored on the same resamples
(per segment, within the segment's visitors); percentile intervals. <strong>Bold with *</strong>: the interval
excludes 0. Each model's own intervals are under its figures above.</p>
<table><tr><th>baseline</th>{head}</tr>{rows}</table>
<h3>NDCG@{k} per segment (visitors)</h3>
<table><tr><th>baseline</th>{seg_head}</tr>{seg_rows}</table>"""


def _configuration(result: EvalResult) -> str:
    """Each model's settings (stage_aware's in the model.toml format, a baseline's own hyperparameters)."""
    if not result.configuration:
        return ""
    parts = []
    for name, doc in result.configuration.items():
        text = to_toml(doc) if name == "stage_aware" else json.dumps(doc, indent=2)
        parts.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(text)}</pre>")
    return "<h2>Configuration</h2>" + "".join(parts)


def _data(result: EvalResult) -> str:
    """The data summary: each part's time range, visitors, items and events; the rows the readers read
    and what their rules filtered, by rule, with each reader's own account."""
    d = result.data
    if d is None:
        return ""
    parts = "".join(
        f"<tr><td>{name}</td><td>{html.escape(p.start)}</td><td>{html.escape(p.end)}</td>"
        f"<td>{p.visitors:,}</td><td>{p.items:,}</td><td>{p.events:,}</td></tr>"
        for name, p in (("train", d.train), ("test", d.test))
    )
    filtered = (
        "<table><tr><th>rows filtered by rule</th><th>rows</th></tr>"
        + "".join(f"<tr><td>{html.escape(r)}</td><td>{n:,}</td></tr>" for r, n in d.filtered.items())
        + "</table>"
        if d.filtered
        else "<p>No row was filtered.</p>"
    )
    readers = "".join(
        f"<li>{html.escape(name)}: {html.escape(s.reader)}, {s.rows:,} rows &rarr; {s.events:,} events;"
        f" {html.escape(s.detail)}</li>"
        for name, s in result.inputs.items()
    )
    return f"""<h2>Data</h2>
<table><tr><th>part</th><th>first event</th><th>last event</th><th>visitors</th><th>items</th>
<th>events</th></tr>{parts}</table>
<p>{d.test_visitors:,} test visitors scored (a positive test event on an item known at training time);
{d.rows:,} rows read.</p>
{filtered}
<ul>{readers}</ul>"""


def _blend_chart(blend: BlendWeights) -> str:
    """The blend weights as a heat map, features by stage, each cell labelled with its weight."""
    stages = [f"{s.stage}\n({s.fitted_on}, {s.positives:,})" for s in blend.stages]
    w = np.array([[s.weights.get(f, 0.0) for s in blend.stages] for f in FEATURE_NAMES])
    fig, ax = plt.subplots(figsize=(1.3 * len(stages) + 3, 0.38 * len(FEATURE_NAMES) + 1.5))
    span = max(float(np.abs(w).max()), 1e-6)
    im = ax.imshow(w, cmap="RdBu", vmin=-span, vmax=span, aspect="auto")
    ax.set_xticks(range(len(stages)), stages, rotation=30, ha="right")
    ax.set_yticks(range(len(FEATURE_NAMES)), FEATURE_NAMES)
    ax.set_title("Fitted blend weights per stage")
    for i in range(w.shape[0]):
        for j in range(w.shape[1]):
            dark = abs(w[i, j]) > 0.6 * span
            ax.text(j, i, f"{w[i, j]:+.2f}", ha="center", va="center", fontsize=7, color="w" if dark else "k")
    ax.set_xlabel("stage (fitted on, validation positives)")
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.04, label="weight")
    return _png(fig)


def _blend(result: EvalResult) -> str:
    """The reference model's fitted blend weights per stage: a table and a chart."""
    b = result.blend
    if b is None or not b.stages:
        return ""
    head = "".join(f"<th>{html.escape(s.stage)}</th>" for s in b.stages)
    rows = [
        "<tr><td>positives</td>" + "".join(f"<td>{s.positives:,}</td>" for s in b.stages) + "</tr>",
        "<tr><td>fitted on</td>"
        + "".join(f"<td>{html.escape(s.fitted_on)}</td>" for s in b.stages)
        + "</tr>",
    ]
    rows += [
        f"<tr><td>{html.escape(f)}</td>"
        + "".join(f"<td>{s.weights.get(f, 0.0):+.3f}</td>" for s in b.stages)
        + "</tr>"
        for f in FEATURE_NAMES
    ]
    return f"""<h2>Blend weights per stage</h2>
<p>The weights the stage-aware model fitted on the validation window carved from the training data
(positives: the validation positives of visitors in that stage; fitted on <em>all</em>: too few of them, the
stage uses the weights fitted on every stage together). A score is the sum of weight &times; feature.</p>
<table><tr><th>feature</th>{head}</tr>{"".join(rows)}</table>
<img alt="blend weights per stage" src="{_blend_chart(b)}">"""


def _examples(result: EvalResult) -> str:
    """A few of the reference model's lists per stage, each item with its source, reason and relevance."""
    if not result.examples:
        return ""
    ref = html.escape(result.bootstrap.reference if result.bootstrap else "stage_aware")
    parts = []
    for stage, lists in result.examples.items():
        parts.append(f"<h3>{html.escape(stage)}</h3>")
        for e in lists:
            rows = "".join(
                f"<tr><td>{i}</td><td>{html.escape(it.item_id)}</td><td>{html.escape(it.title)}</td>"
                f"<td>{it.score:.3f}</td><td>{html.escape(it.source)}</td><td>{html.escape(it.reason)}</td>"
                f"<td>{'yes' if it.relevant else ''}</td></tr>"
                for i, it in enumerate(e.items, 1)
            )
            parts.append(
                f"<p>Visitor <code>{html.escape(e.visitor_id)}</code>: {e.train_events:,} training events,"
                f" {e.relevant_items:,} relevant test items.</p>"
                "<table><tr><th>#</th><th>item</th><th>title</th><th>score</th><th>source</th>"
                f"<th>reason</th><th>relevant</th></tr>{rows}</table>"
            )
    return f"""<h2>Example lists per stage</h2>
<p>{ref}'s first items for a few test visitors per journey stage at the split (drawn with the run's seed),
explained as the service explains them: the source is the blend feature that added most to the item's
score. <em>relevant</em>: the visitor had a positive event on the item in the test window.</p>
{"".join(parts)}"""


def render_report(result: EvalResult) -> str:
    """The report as one HTML string (no external resources)."""
    k = result.k
    models = list(result.models)
    overall = _grouped_bars(
        [f"{m}@{k}" for m in METRICS],
        {n: [getattr(result.models[n].overall, m) for m in METRICS] for n in models},
        "Overall metrics per model (whiskers: 95% intervals)",
        "value",
        {n: [result.models[n].overall.ci95.get(m) for m in METRICS] for n in models},
    )
    segments = list(result.models[models[0]].segments)
    seg_labels = [f"{s}\n({result.models[models[0]].segments[s].users:,})" for s in segments]
    by_segment = _grouped_bars(
        seg_labels,
        {n: [result.models[n].segments[s].ndcg for s in segments] for n in models},
        f"NDCG@{k} per segment (visitors in the segment; whiskers: 95% intervals)",
        f"ndcg@{k}",
        {n: [result.models[n].segments[s].ci95.get("ndcg") for s in segments] for n in models},
    )
    title = html.escape(f"journeyrec evaluation: {result.dataset}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}
.sig{{color:#064}}</style></head><body>
<h1>{title}</h1>
<p>{html.escape(result.split)}; k = {k}; positives: {html.escape(", ".join(result.positive))};
exclude seen: {result.exclude_seen}; {result.train_events:,} training and {result.test_events:,} test events;
{result.candidates:,} candidate items.</p>
{_data(result)}
<h2>Results</h2>
{_table(result)}
{_differences(result)}
{_configuration(result)}
{_blend(result)}
<h2>Per model</h2><img alt="overall metrics" src="{overall}">
<h2>Per segment</h2><img alt="ndcg per segment" src="{by_segment}">
<p>Segments: <em>cold</em>, test visitors without any training event; <em>warm</em>, the others;
{", ".join(f"<em>{s.value}</em>" for s in STAGES)}, the test visitors whose journey stage at the split
(from their training events, by the model's journey rules) was that stage.</p>
<h2>Journey</h2><img alt="stage transitions" src="{_transition_chart(result)}">
{_examples(result)}
</body></html>
"""


def write_report(result: EvalResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(result), encoding="utf-8")
