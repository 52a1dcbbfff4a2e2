// Models: GET /v1/models (versions, metrics, live version, the version each worker serves, blend weights),
// reload and roll back (admin).
import { get, post } from "../api.js";
import { chart, chartBox, destroyAll, PALETTE } from "../charts.js";
import { actionButton, append, card, confirmBox, errorMsg, facts, fmt, h, msg, replace, table } from "../dom.js";

export const title = "Models";

export async function render(root, notice) {
  let m;
  try {
    m = await get("/v1/models");
  } catch (err) {
    replace(root, card("Models", errorMsg(err)));
    return;
  }
  destroyAll();
  const status = h("div", { class: "models-status" });
  if (notice) append(status, [notice]);
  const reload = actionButton("Reload latest", async () => {
    const r = await post("/v1/models/reload");
    await render(root, msg("ok", r.changed ? `Reloaded: now serving ${r.version} (was ${r.previous}).` : `Already serving ${r.version}.`));
  }, { kind: "secondary", out: status });
  const live = m.live;
  replace(root, status, card("Serving",
    facts([["Live version (this worker)", live ? live.version : "none loaded"], ["Loaded", live ? fmt.time(live.loaded_at) : "–"],
      ["latest points at", m.latest || "–"], ["Live catalog version", String(m.catalog_version)],
      ["Last error", m.last_error || "none"],
      ["Last refused", m.last_refused ? `${m.last_refused.version}: ${m.last_refused.reason}` : "none"]]),
    h("p", { class: "muted" }, `Each worker follows latest within its poll interval; this answer comes from worker ${m.worker || "–"}.`),
    h("div", { class: "actions" }, reload)),
  workers(m), versions(root, m, status), blend(live));
}

function workers(m) {
  if (m.workers_error) return card("Workers", h("p", { class: "msg msg-error", role: "alert" }, `Workers unknown: ${m.workers_error}`));
  const rows = m.workers.map((w) => {
    const serves = h("span", {}, w.model_version || "no model loaded");
    const notes = [];
    if (w.worker === m.worker) notes.push(h("span", { class: "badge" }, "answered this"));
    if (m.latest && w.model_version !== m.latest) notes.push(h("span", { class: "badge bad" }, "not latest"));
    else if (w.model_version) notes.push(h("span", { class: "badge good" }, "latest"));
    return [w.worker, serves, h("span", { class: "actions tight" }, notes), fmt.time(w.started),
      `${fmt.time(w.last_seen)} (${fmt.num(w.seen_seconds_ago, 1)} s before this answer)`];
  });
  return card("Workers",
    table("Workers and the version each serves", [{ label: "Worker (host:pid)", rowHeader: true }, { label: "Serves" }, { label: "Status" },
      { label: "Started" }, { label: "Last seen" }], rows, { empty: "no worker heard from lately" }),
    h("p", { class: "muted" }, "Every worker writes a heartbeat; one not heard from for three heartbeats is left out."));
}

function metricText(metrics) {
  const parts = Object.entries(metrics || {}).filter(([, v]) => typeof v === "number" || typeof v === "string")
    .map(([k, v]) => `${k}: ${typeof v === "number" ? fmt.num(v, Number.isInteger(v) ? 0 : 4) : v}`);
  return parts.join(", ") || "–";
}

function versions(root, m, status) {
  const published = (m.published && m.published.length ? m.published : m.versions.map((v) => ({ version: v }))).slice().reverse();
  const rows = published.map((p) => {
    const isLatest = p.version === m.latest;
    const cell = h("div", { class: "actions" });
    if (isLatest) {
      cell.append(h("span", { class: "badge good" }, "latest"));
    } else {
      const btn = h("button", { type: "button", class: "secondary", "aria-label": `Activate ${p.version}` }, "Activate…");
      btn.addEventListener("click", () => {
        btn.disabled = true;
        const box = confirmBox(`Serve ${p.version} and point latest at it? Every worker follows within its poll interval.`,
          "Activate", async () => {
            box.remove();
            try {
              const r = await post("/v1/models/activate", { version: p.version });
              await render(root, msg("ok", `Activated ${r.version} (was ${r.previous}); latest points at it.`));
            } catch (err) {
              replace(status, errorMsg(err));
              btn.disabled = false;
            }
          }, () => { box.remove(); btn.disabled = false; btn.focus(); });
        replace(status, box);
      });
      cell.append(btn);
    }
    return [p.version, p.created_at || "–", p.trained_until ? fmt.time(p.trained_until) : "–", fmt.num(p.n_items),
      fmt.num(p.n_visitors), p.error ? `unreadable: ${p.error}` : metricText(p.metrics), cell];
  });
  return card("Published versions",
    table("Versions, newest first", [{ label: "Version", rowHeader: true }, { label: "Created" }, { label: "Trained until" },
      { label: "Items", num: true }, { label: "Visitors", num: true }, { label: "Metrics" }, { label: "Roll back" }], rows,
    { empty: "nothing published" }));
}

function blend(live) {
  const stages = live && live.manifest && live.manifest.blend ? live.manifest.blend.stages : [];
  if (!stages.length) return card("Blend weights per stage", h("p", { class: "muted" }, "No model loaded."));
  const features = [...new Set(stages.flatMap((s) => Object.keys(s.weights)))];
  const { box, canvas } = chartBox(`Fitted blend weights of model ${live.version}, per stage and feature`, { tall: true });
  const section = card("Blend weights per stage (live model)", box,
    table("Blend weights (feature by stage)", [{ label: "Feature", rowHeader: true }, ...stages.map((s) => ({ label: s.stage, num: true }))],
      [["fitted on", ...stages.map((s) => s.fitted_on)], ["positives", ...stages.map((s) => fmt.num(s.positives))],
        ...features.map((f) => [f, ...stages.map((s) => fmt.num(s.weights[f], 3))])]));
  chart(canvas, {
    type: "bar",
    data: {
      labels: features,
      datasets: stages.map((s, i) => ({ label: s.stage, data: features.map((f) => s.weights[f] ?? 0), backgroundColor: PALETTE[i % PALETTE.length] })),
    },
    options: { scales: { y: { title: { display: true, text: "weight" } } } },
  });
  return section;
}
