// Journey: GET /v1/analytics/journey — stages over time, funnel, transitions, time in stage, impact.
import { get, query } from "../api.js";
import { chart, chartBox, PALETTE, STAGES } from "../charts.js";
import { append, card, errorMsg, field, fmt, h, msg, replace, select, table } from "../dom.js";

export const title = "Journey";

const CHANNELS = [["", "all channels"], ["email", "email"], ["ad", "ad"], ["search", "search"], ["social", "social"],
  ["direct", "direct"], ["referral", "referral"], ["none", "none (no channel)"]];

function isoDay(d) {
  return d.toISOString().slice(0, 10);
}

export async function render(root) {
  const today = new Date();
  const tomorrow = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate() + 1));
  const weekAgo = new Date(tomorrow.getTime() - 7 * 86400000);
  const from = h("input", { type: "date", name: "from", value: isoDay(weekAgo), required: true });
  const to = h("input", { type: "date", name: "to", value: isoDay(tomorrow), required: true });
  const granularity = select("granularity", [["day", "day"], ["hour", "hour"]], "day");
  const channel = select("channel", CHANNELS, "");
  const out = h("div", { class: "journey-out" });
  const form = h("form", { class: "inline", "aria-label": "Period and channel" },
    field("From (UTC, inclusive)", from), field("To (UTC, exclusive)", to), field("Granularity", granularity),
    field("Channel", channel), h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    load(out, { from: `${from.value}T00:00:00`, to: `${to.value}T00:00:00`, granularity: granularity.value, channel: channel.value });
  });
  append(root, [card("Period", form), out]);
  await load(out, { from: `${from.value}T00:00:00`, to: `${to.value}T00:00:00`, granularity: "day", channel: "" });
}

async function load(out, params) {
  replace(out, msg("info", "Loading…"));
  let data;
  try {
    data = await get(`/v1/analytics/journey${query(params)}`);
  } catch (err) {
    replace(out, errorMsg(err));
    return;
  }
  replace(out);
  const summary = card("Summary",
    h("p", {}, `${data.from} to ${data.to} by ${data.granularity}${data.channel ? `, channel ${data.channel}` : ", all channels"}: `,
      `${fmt.num(data.periods.reduce((s, p) => s + p.transitions, 0))} stage transitions, `,
      `${fmt.num(data.first_sightings)} first sightings.`),
    data.notes.length ? h("ul", { class: "plain" }, data.notes.map((n) => h("li", { class: "muted" }, n))) : null,
    h("p", { class: "muted" }, "Abandoned carts and lapsing customers are not reported by /v1/analytics/journey; " +
      "a visitor's cart is on the Visitor explorer page."));
  append(out, [summary, h("div", { class: "grid2" }, distribution(data), funnel(data)),
    h("div", { class: "grid2" }, transitions(data), timeInStage(data)), impact(data)]);
}

function distribution(data) {
  const { box, canvas } = chartBox("Distinct visitors per stage and period, stacked", { tall: true });
  const section = card("Stage distribution over time", box);
  chart(canvas, {
    type: "bar",
    data: {
      labels: data.periods.map((p) => (data.granularity === "hour" ? p.start.slice(5, 16).replace("T", " ") : p.start.slice(0, 10))),
      datasets: STAGES.map((s, i) => ({ label: s, data: data.periods.map((p) => p.visitors[s] || 0), backgroundColor: PALETTE[i] })),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, title: { display: true, text: "visitors" } } } },
  });
  return section;
}

function funnel(data) {
  const { box, canvas } = chartBox("Funnel: visitors who reached each stage or a later one");
  chart(canvas, {
    type: "bar",
    data: {
      labels: data.funnel.map((f) => f.stage),
      datasets: [{ label: "visitors", data: data.funnel.map((f) => f.visitors), backgroundColor: PALETTE.slice(0, 5) }],
    },
    options: { indexAxis: "y", plugins: { legend: { display: false } } },
  });
  const rows = data.funnel.map((f) => [f.stage, fmt.num(f.visitors), f.drop_off === null ? "–" : fmt.pct(f.drop_off)]);
  return card("Funnel with drop-off", box,
    table("Funnel", [{ label: "Stage", rowHeader: true }, { label: "Visitors", num: true }, { label: "Drop-off from previous step", num: true }], rows));
}

function transitions(data) {
  const rate = new Map(data.transitions.map((t) => [`${t.from}>${t.to}`, t.rate]));
  const targets = STAGES.filter((s) => Object.values(data.matrix).some((row) => row[s]));
  const rows = STAGES.filter((s) => data.matrix[s]).map((from) => [from, ...targets.map((to) => {
    const n = data.matrix[from][to] || 0;
    return n ? `${fmt.num(n)} (${fmt.pct(rate.get(`${from}>${to}`) || 0, 0)})` : "–";
  })]);
  return card("Transition matrix",
    h("p", { class: "muted" }, "Moves from the row's stage to the column's: count (share of the moves out of the row's stage)."),
    table("Transitions", [{ label: "From \\ to", rowHeader: true }, ...targets.map((t) => ({ label: t, num: true }))], rows,
      { empty: "no transition in this period" }));
}

function timeInStage(data) {
  const rows = data.time_in_stage.map((t) => [t.stage, fmt.num(t.left), fmt.duration(t.median_seconds),
    t.median_bucket_low === null ? "–" : `${fmt.duration(t.median_bucket_low)} – ${t.median_bucket_high === null ? "∞" : fmt.duration(t.median_bucket_high)}`]);
  return card("Median time in stage",
    table("Time in stage (visitors who left it in the period)", [{ label: "Stage", rowHeader: true }, { label: "Left", num: true },
      { label: "Median", num: true }, { label: "Median's bucket", num: true }], rows));
}

function impact(data) {
  const imp = data.recommendation_impact;
  if (!imp) return card("Recommendation impact", h("p", { class: "muted" }, "Not reported for this period."));
  const rows = imp.stages.map((s) => [s.stage, fmt.num(s.clicked.visitors), fmt.pct(s.clicked.advance_rate),
    fmt.num(s.not_clicked.visitors), fmt.pct(s.not_clicked.advance_rate)]);
  return card("Recommendation impact",
    h("p", { class: "muted" }, imp.note),
    table("Stage-advance rate, clicked a recommendation vs not", [{ label: "Stage", rowHeader: true },
      { label: "Clicked: visitors", num: true }, { label: "Clicked: advance rate", num: true },
      { label: "Not clicked: visitors", num: true }, { label: "Not clicked: advance rate", num: true }], rows));
}
