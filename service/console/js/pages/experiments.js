// Experiments: GET /v1/experiments, results per variant x stage (intervals, SRM, daily CTR), start / stop (admin).
import { get, post, seg } from "../api.js";
import { chart, chartBox, destroyAll, PALETTE } from "../charts.js";
import { actionButton, append, card, errorMsg, facts, fmt, h, msg, replace, table } from "../dom.js";

export const title = "Experiments";

export async function render(root) {
  const list = h("div");
  const results = h("div", { class: "experiment-results" });
  append(root, [list, results]);
  await loadList(list, results);
}

async function loadList(list, results, notice) {
  let data;
  try {
    data = await get("/v1/experiments");
  } catch (err) {
    replace(list, card("Experiments", errorMsg(err)));
    return;
  }
  const status = h("div");
  const rows = data.experiments.map((x) => [
    x.id,
    h("span", { class: `badge ${x.state === "running" ? "good" : ""}` }, x.state),
    x.placements.join(", "),
    x.variants.map((v) => `${v.name}${v.control ? " (control)" : ""} ×${v.weight ?? 1}`).join("; "),
    fmt.pct(x.traffic, 0),
    x.started_at ? fmt.time(x.started_at) : "–",
    x.stopped_at ? fmt.time(x.stopped_at) : "–",
    h("div", { class: "actions" },
      actionButton("Results", () => loadResults(results, x.id), { kind: "secondary", out: status, ariaLabel: `Results of ${x.id}` }),
      x.state === "draft" ? actionButton("Start", () => act(list, results, x.id, "start"), { out: status, ariaLabel: `Start ${x.id}` }) : null,
      x.state === "running" ? actionButton("Stop", () => act(list, results, x.id, "stop"), { kind: "danger", out: status, ariaLabel: `Stop ${x.id}` }) : null),
  ]);
  replace(list, card("Experiments",
    h("p", { class: "muted" }, `Service-wide holdout: ${fmt.pct(data.holdout, 0)}. Start and stop need the admin scope.`),
    notice || null, status,
    table("Experiments", [{ label: "Id", rowHeader: true }, { label: "State" }, { label: "Placements" }, { label: "Variants" },
      { label: "Traffic", num: true }, { label: "Started" }, { label: "Stopped" }, { label: "Actions" }], rows,
    { empty: "no experiment yet (PUT /v1/experiments/{id} creates one)" })));
}

async function act(list, results, id, what) {
  const x = await post(`/v1/experiments/${seg(id)}/${what}`);
  await loadList(list, results, msg("ok", `Experiment ${x.id} is ${x.state}.`));
  await loadResults(results, id);
}

function metric(m) {
  if (!m || m.value === null || m.value === undefined) return "–";
  const se = m.se === null || m.se === undefined ? "" : ` ± ${fmt.num(m.se, 4)}`;
  return `${fmt.num(m.value, 4)}${se}`;
}

function diff(m) {
  if (!m || !m.vs_control) return "–";
  const d = m.vs_control;
  return h("span", { class: d.significant ? "badge good" : null },
    `${d.diff >= 0 ? "+" : ""}${fmt.num(d.diff, 4)} [${fmt.num(d.low, 4)}, ${fmt.num(d.high, 4)}]${d.significant ? " significant" : ""}`);
}

async function loadResults(results, id) {
  destroyAll();
  replace(results, msg("info", `Loading the results of ${id}…`));
  let r;
  try {
    r = await get(`/v1/experiments/${seg(id)}/results`);
  } catch (err) {
    replace(results, card(`Results of ${id}`, errorMsg(err)));
    return;
  }
  const srm = r.sample_ratio;
  const rows = r.cells.map((c) => [c.variant, c.stage, fmt.num(c.visitors), fmt.num(c.lists), fmt.num(c.impressions),
    fmt.num(c.clicks), metric(c.ctr), diff(c.ctr), metric(c.conversion_rate), diff(c.conversion_rate),
    metric(c.revenue_per_visitor), diff(c.revenue_per_visitor)]);
  const { box, canvas } = chartBox(`Daily click-through rate per variant of ${id}, all stages`);
  const variants = [...new Set(r.cells.map((c) => c.variant))];
  const { days, ctr } = dailyCtr(r.daily);
  replace(results, card(`Results of ${id}`,
    facts([["Control", r.control], ["Sample ratio", h("span", { class: `badge ${srm.mismatch ? "bad" : "good"}` },
      srm.mismatch ? `mismatch (p = ${fmt.num(srm.p_value, 5)})` : `ok${srm.p_value === null ? "" : ` (p = ${fmt.num(srm.p_value, 3)})`}`)],
    ["Visitors observed", Object.entries(srm.observed).map(([v, n]) => `${v}: ${n}`).join(", ") || "none"],
    ["Visitors expected", Object.entries(srm.expected).map(([v, n]) => `${v}: ${fmt.num(n, 1)}`).join(", ") || "none"]]),
    table("Per variant and stage (value ± standard error; difference to control with its 95 % interval)",
      [{ label: "Variant", rowHeader: true }, { label: "Stage" }, { label: "Visitors", num: true }, { label: "Lists", num: true },
        { label: "Impressions", num: true }, { label: "Clicks", num: true }, { label: "CTR" }, { label: "CTR vs control" },
        { label: "Conversion" }, { label: "Conversion vs control" }, { label: "Revenue / visitor" }, { label: "Revenue vs control" }],
      rows, { empty: "no visitor assigned yet" }),
    h("h3", {}, "Daily click-through rate"), box,
    h("p", { class: "muted" }, r.method)));
  chart(canvas, {
    type: "bar",
    data: {
      labels: days,
      datasets: variants.map((v, i) => ({
        label: v,
        data: days.map((day) => ctr.get(`${day}|${v}`) ?? null),
        borderColor: PALETTE[i % PALETTE.length], backgroundColor: PALETTE[i % PALETTE.length],
      })),
    },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: "CTR" } } } },
  });
}

// Clicks / impressions per day and variant over every stage (the series is per day, variant and stage).
function dailyCtr(points) {
  const sums = new Map();
  for (const p of points.filter((d) => d.stage !== "all")) {
    const key = `${p.day}|${p.variant}`;
    const s = sums.get(key) || { clicks: 0, impressions: 0 };
    s.clicks += p.counts.clicks || 0;
    s.impressions += p.counts.impressions || 0;
    sums.set(key, s);
  }
  const ctr = new Map([...sums].filter(([, s]) => s.impressions > 0).map(([k, s]) => [k, s.clicks / s.impressions]));
  const days = [...new Set(points.map((d) => d.day))].sort();
  return { days, ctr };
}
