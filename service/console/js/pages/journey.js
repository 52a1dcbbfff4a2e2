// Journey: GET /v1/analytics/journey — abandoned carts and lapsed customers, stages over time, funnel,
// transitions, time in stage, impact.
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
    data.notes.length ? h("ul", { class: "plain" }, data.notes.map((n) => h("li", { class: "muted" }, n))) : null);
  append(out, [summary, byTime(data), h("div", { class: "grid2" }, distribution(data), funnel(data)),
    h("div", { class: "grid2" }, transitions(data), timeInStage(data)), impact(data)]);
}

function label(data, p) {
  return data.granularity === "hour" ? p.start.slice(5, 16).replace("T", " ") : p.start.slice(0, 10);
}

// The later half of the periods against the earlier half: "+25 % on the earlier half", or why not.
function trend(periods, key) {
  const half = Math.floor(periods.length / 2);
  if (half === 0) return "too few periods for a trend";
  const sum = (ps) => ps.reduce((s, p) => s + p[key], 0);
  const early = sum(periods.slice(0, half));
  const late = sum(periods.slice(periods.length - half));
  if (early === 0) return late === 0 ? "none in either half of the period" : `${fmt.num(late)} in the later half, none in the earlier`;
  const change = (late - early) / early;
  return `${change >= 0 ? "+" : "−"}${fmt.pct(Math.abs(change), 0)} in the later half of the period on the earlier half`;
}

function byTime(data) {
  const bt = data.by_time;
  if (!bt) return card("Abandoned carts and lapsed customers", h("p", { class: "muted" }, "Not reported for this period."));
  const { box, canvas } = chartBox("Abandoned carts and lapsed customers per period");
  chart(canvas, {
    type: "line",
    data: {
      labels: data.periods.map((p) => label(data, p)),
      datasets: [
        { label: "abandoned carts", data: data.periods.map((p) => p.abandoned_carts), borderColor: PALETTE[2], backgroundColor: PALETTE[2] },
        { label: "lapsed customers", data: data.periods.map((p) => p.lapsed), borderColor: PALETTE[3], backgroundColor: PALETTE[3] },
      ],
    },
    options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 }, title: { display: true, text: "visitors" } } } },
  });
  const rows = [
    ["Abandoned carts", fmt.num(bt.abandoned_carts), trend(data.periods, "abandoned_carts")],
    ["Lapsed customers", fmt.num(bt.lapsed), trend(data.periods, "lapsed")],
  ];
  return card("Abandoned carts and lapsed customers",
    h("p", { class: "muted" }, "Visitors who left decision when their cart expired, and customers who left retention when " +
      "its window ended, counted when it happened whether or not they came back (every channel)."),
    h("div", { class: "grid2" },
      table("Changes by time in the period", [{ label: "", rowHeader: true }, { label: "Visitors", num: true }, { label: "Trend" }], rows),
      box));
}

function distribution(data) {
  const { box, canvas } = chartBox("Distinct visitors per stage and period, stacked", { tall: true });
  const section = card("Stage distribution over time", box);
  chart(canvas, {
    type: "bar",
    data: {
      labels: data.periods.map((p) => label(data, p)),
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
