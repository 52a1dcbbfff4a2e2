// Visitor explorer: GET /v1/visitors/{id}/journey, /identities and /recommendations (any stage or placement),
// erase (admin).
import { del, get, query, seg } from "../api.js";
import { STAGES } from "../charts.js";
import { append, card, confirmBox, errorMsg, facts, field, fmt, h, msg, replace, select, table } from "../dom.js";

export const title = "Visitor explorer";

const PLACEMENTS = ["home", "product", "cart", "checkout", "category", "search", "email", "ad"];

export async function render(root) {
  const id = h("input", { type: "text", name: "visitor_id", required: true, maxlength: 256, size: 28, spellcheck: "false" });
  const stage = select("stage", [["", "inferred"], ...STAGES.map((s) => [s, s])], "");
  const placement = h("input", { type: "text", name: "placement", value: "home", list: "placements", size: 12, pattern: "[a-z][a-z_]{0,31}" });
  const k = h("input", { type: "number", name: "k", value: "10", min: "1", max: "50", size: 4 });
  const list = h("datalist", { id: "placements" }, PLACEMENTS.map((p) => h("option", { value: p })));
  const out = h("div", { class: "visitor-out" });
  const form = h("form", { class: "inline", "aria-label": "Look a visitor up" },
    field("Visitor id", id), field("Stage (preview)", stage), field("Placement", placement), field("Products (k)", k), list,
    h("button", { type: "submit" }, "Look up"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = id.value.trim();
    if (v) load(out, v, { stage: stage.value, placement: placement.value.trim() || "home", k: k.value });
  });
  append(root, [card("Visitor", form), out]);
  const fromHash = decodeURIComponent(location.hash.split("/")[1] || "");
  if (fromHash) {
    id.value = fromHash;
    await load(out, fromHash, { stage: "", placement: "home", k: "10" });
  } else {
    id.focus();
  }
}

async function load(out, visitorId, opts) {
  replace(out, msg("info", "Loading…"));
  const journeyBox = h("div");
  const recsBox = h("div");
  const idsBox = h("div");
  replace(out, idsBox, h("div", { class: "grid2" }, journeyBox, recsBox), eraseCard(visitorId, out));
  await Promise.all([identities(idsBox, visitorId), journey(journeyBox, visitorId), recommendations(recsBox, visitorId, opts)]);
}

// A link that looks `id` up on this page (the hash carries it: #visitor/<id>).
const visitorLink = (id) => h("a", { href: `#visitor/${encodeURIComponent(id)}`, class: "visitor-link" }, id);

async function identities(box, visitorId) {
  let ids;
  try {
    ids = await get(`/v1/visitors/${seg(visitorId)}/identities`);
  } catch (err) {
    replace(box, card("Linked identities", errorMsg(err)));
    return;
  }
  const user = ids.user_id;
  const others = ids.anonymous_ids.filter((a) => a !== visitorId);
  const anonymous = ids.anonymous_ids.length
    ? h("ul", { class: "plain inline-list", "aria-label": "Anonymous ids linked to the user" },
      ids.anonymous_ids.map((a) => h("li", {}, a === visitorId ? h("strong", {}, `${a} (this id)`) : visitorLink(a))))
    : h("span", { class: "muted" }, "none");
  replace(box, card("Linked identities",
    facts([
      ["Linked to user", user ? visitorLink(user) : (ids.anonymous_ids.length ? "this id is the user" : "none: not linked to a user")],
      [user ? "The user's anonymous ids" : "Anonymous ids linked to it", anonymous],
    ]),
    h("p", { class: "muted" }, user
      ? `This anonymous id is an alias: its events and reads are ${user}'s (${others.length ? `${others.length} other id${others.length === 1 ? "" : "s"} too` : "the only one linked"}).`
      : "Logins (POST /v1/identities) link anonymous ids to a user; reads of a linked id serve the user's state.")));
}

async function journey(box, visitorId) {
  let j;
  try {
    j = await get(`/v1/visitors/${seg(visitorId)}/journey?limit=50`);
  } catch (err) {
    replace(box, card("Journey", errorMsg(err)));
    return;
  }
  const rows = j.touchpoints.map((t) => [t.time.replace("T", " ").replace(/\+00:00$/, ""), t.event, t.item_id, t.channel || "–",
    h("span", { class: `stage-badge stage-${STAGES.includes(t.stage) ? t.stage : "other"}` }, t.stage)]);
  replace(box, card("Journey",
    facts([["Visitor", j.visitor_id], ["Stage", h("strong", { class: "stage-name" }, j.stage.name)],
      ["Confidence", fmt.pct(j.stage.confidence, 0)], ["Cart", j.cart.length ? j.cart.join(", ") : "empty"],
      ["Purchases", j.purchases.length ? j.purchases.join(", ") : "none"], ["Model", j.model_version]]),
    h("h3", {}, "Signals"),
    j.stage.signals.length ? h("ul", { class: "plain signals" }, j.stage.signals.map((s) => h("li", {}, s))) : h("p", { class: "muted" }, "none"),
    table("Touchpoints, newest first", [{ label: "Time (UTC)" }, { label: "Event" }, { label: "Item" }, { label: "Channel" },
      { label: "Stage after" }], rows, { empty: "no touchpoint stored for this visitor", limit: true }),
    h("p", { class: "muted" }, "Stage after: the stage the visitor was in just after each touchpoint (the stage engine over the "
      + "touchpoints up to it). The stage above is the stage now, which time alone can change (an abandoned cart expires, a customer lapses).")));
}

function itemRows(items) {
  return items.map((it, i) => [String(i + 1), it.item_id, fmt.num(it.score, 3), it.source, it.reason,
    it.rules && it.rules.length ? it.rules.map((r) => `${r.effect} by ${r.rule}`).join("; ") : (it.exploration ? "exploration slot" : "–")]);
}

const ITEM_COLUMNS = [{ label: "#", num: true }, { label: "Item" }, { label: "Score", num: true }, { label: "Source" },
  { label: "Reason" }, { label: "Rule effects" }];

async function recommendations(box, visitorId, opts) {
  let r;
  try {
    // a preview: not logged as a list shown to the visitor, nor counted in experiments
    r = await get(`/v1/visitors/${seg(visitorId)}/recommendations${query({ ...opts, preview: "true" })}`);
  } catch (err) {
    replace(box, card("Recommendations", errorMsg(err)));
    return;
  }
  replace(box, card("Recommendations",
    facts([["Stage used", `${r.stage.name}${opts.stage ? " (chosen above)" : " (inferred)"}`], ["Placement", opts.placement],
      ["Model", r.model_version], ["Rules version", r.rules_version ?? "none"],
      ["Experiment", r.experiment ? `${r.experiment} / ${r.variant}` : "none"],
      ["Fallback", r.fallback ? "yes: the visitor store did not answer" : "no"], ["List id", r.recommendation_id]]),
    table("Products", ITEM_COLUMNS, itemRows(r.products)),
    table("Content", ITEM_COLUMNS, itemRows(r.content)),
    h("p", { class: "muted" }, "Each preview is served like a storefront's request (it is counted as a served list).")));
}

function eraseCard(visitorId, out) {
  const result = h("div");
  const btn = h("button", { type: "button", class: "danger" }, "Erase this visitor…");
  btn.addEventListener("click", () => {
    btn.disabled = true;
    const box = confirmBox(`Erase everything held about visitor ${visitorId}, and the anonymous ids linked to it? This cannot be undone.`,
      "Erase", async () => {
        box.remove();
        try {
          const done = await del(`/v1/visitors/${seg(visitorId)}`);
          replace(out, msg("ok", `Visitor ${done.visitor_id} erased: ${done.records_removed} records removed.`));
        } catch (err) {
          replace(result, errorMsg(err));
          btn.disabled = false;
        }
      }, () => { box.remove(); btn.disabled = false; btn.focus(); });
    replace(result, box);
  });
  return card("Erase (admin)", h("p", { class: "muted" }, "GDPR erase: the visitor's state, journey records and served lists."), btn, result);
}
