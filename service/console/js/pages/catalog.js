// Catalog & rules: GET /v1/items/{id}, the rules and their audit (admin), preview a change, then save it.
import { get, post, put, seg } from "../api.js";
import { append, card, errorMsg, facts, field, fmt, h, msg, replace, table } from "../dom.js";

export const title = "Catalog & rules";

export async function render(root) {
  const itemBox = h("div");
  const rulesBox = h("div");
  const auditBox = h("div");
  const state = { rules: null };
  append(root, [itemCard(itemBox, state), itemBox, rulesBox, auditBox]);
  await Promise.all([loadRules(rulesBox, auditBox, state), loadAudit(auditBox)]);
}

function itemCard(itemBox, state) {
  const id = h("input", { type: "text", name: "item_id", required: true, maxlength: 256, size: 28, spellcheck: "false" });
  const form = h("form", { class: "inline", "aria-label": "Find an item" }, field("Item id", id), h("button", { type: "submit" }, "Find item"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    if (id.value.trim()) loadItem(itemBox, id.value.trim(), state);
  });
  return card("Find an item", form);
}

// Whether `rule` selects `item` (models.rules: categories and tags any of them, case-insensitive; price; kind).
function touches(rule, item, id) {
  if (rule.action.type === "pin") return rule.action.item_id === id;
  const c = rule.condition;
  if (!c) return true;
  const lower = (xs) => (xs || []).map((x) => String(x).toLowerCase());
  if (c.categories && c.categories.length && !lower(c.categories).includes(String(item.category).toLowerCase())) return false;
  if (c.tags && c.tags.length && !lower(c.tags).some((t) => lower(item.tags).includes(t))) return false;
  if (c.min_price !== null && c.min_price !== undefined && (item.price === null || item.price < c.min_price)) return false;
  if (c.max_price !== null && c.max_price !== undefined && (item.price === null || item.price > c.max_price)) return false;
  if (c.kind && c.kind !== item.kind) return false;
  return true;
}

async function loadItem(box, id, state) {
  replace(box, msg("info", "Loading…"));
  let v;
  try {
    v = await get(`/v1/items/${seg(id)}`);
  } catch (err) {
    replace(box, card(`Item ${id}`, errorMsg(err)));
    return;
  }
  const s = v.served;
  const touching = state.rules ? state.rules.rules.filter((r) => touches(r, s, id)) : null;
  replace(box, card(`Item ${v.item_id}`,
    facts([["Title", s.title], ["Kind", s.kind], ["Category", s.category || "–"], ["Price", s.price === null ? "–" : fmt.num(s.price, 2)],
      ["Tags", s.tags.join(", ") || "–"], ["Stages", s.stages.join(", ") || "any"], ["In stock", s.in_stock ? "yes" : "no"],
      ["Represented", v.represented === "trained" ? "trained (the model learned it)" : "from its features (new to the model)"],
      ["Servable now", v.servable ? "yes" : "no"],
      ["Live catalog entry", v.live ? `hidden: ${v.live.hidden ? "yes" : "no"}, retired: ${v.live.retired ? "yes" : "no"}, ` +
        `from ${v.live.available_from ? fmt.time(v.live.available_from) : "–"} until ${v.live.expires_at ? fmt.time(v.live.expires_at) : "–"}, ` +
        `updated ${fmt.time(v.live.updated_at)}` : "none (served as trained)"],
      ["Model / catalog version", `${v.model_version} / ${v.catalog_version}`],
      ["Rules touching it", touching === null ? "unknown (the rules need a key with the admin scope)"
        : touching.length ? touching.map((r) => `${r.id} (${r.action.type})`).join(", ") : "none"]])));
}

function describeRule(r) {
  const a = r.action;
  const what = a.type === "pin" ? `pin ${a.item_id} at ${a.position}` : a.type === "cap_per_category" ? `at most ${a.max_items} per category`
    : a.factor !== undefined ? `${a.type} ×${a.factor}` : a.type;
  const c = r.condition;
  const cond = !c ? "every item" : [c.categories && c.categories.length ? `categories ${c.categories.join("/")}` : null,
    c.tags && c.tags.length ? `tags ${c.tags.join("/")}` : null, c.min_price != null ? `price ≥ ${c.min_price}` : null,
    c.max_price != null ? `price ≤ ${c.max_price}` : null, c.kind ? `kind ${c.kind}` : null].filter(Boolean).join(", ");
  return [r.id, what, cond || "every item", (r.stages || []).join(", ") || "all", (r.placements || []).join(", ") || "all",
    r.enabled === false ? "no" : "yes"];
}

async function loadRules(box, auditBox, state, notice) {
  let data;
  try {
    data = await get("/v1/rules");
  } catch (err) {
    replace(box, card("Merchandising rules", errorMsg(err)));
    return;
  }
  state.rules = data;
  const editor = h("textarea", { rows: 12, spellcheck: "false", "aria-describedby": "rules-help" });
  editor.value = JSON.stringify({ rules: data.rules }, null, 2);
  const help = h("p", { id: "rules-help", class: "muted" },
    'The whole rule set as JSON ({"rules": [...]}). Preview it on recent visitors first; saving is enabled once the text shown was previewed.');
  const placement = h("input", { type: "text", name: "placement", value: "home", size: 10, pattern: "[a-z][a-z_]{0,31}" });
  const sample = h("input", { type: "number", name: "sample", value: "50", min: "1", max: "500", size: 5 });
  const out = h("div", { class: "preview-out" });
  const previewBtn = h("button", { type: "button" }, "Preview change");
  const saveBtn = h("button", { type: "button", class: "danger", disabled: true }, "Save rule set");
  let previewed = null;
  editor.addEventListener("input", () => { saveBtn.disabled = editor.value !== previewed; });
  const parse = () => {
    try {
      const doc = JSON.parse(editor.value);
      if (!doc || !Array.isArray(doc.rules)) throw new Error('the text must be an object with a "rules" list');
      return doc;
    } catch (e) {
      replace(out, msg("error", `Not a rule set: ${e.message}`));
      return null;
    }
  };
  previewBtn.addEventListener("click", async () => {
    const doc = parse();
    if (!doc) return;
    previewBtn.disabled = true;
    replace(out, msg("info", "Previewing…"));
    try {
      const p = await post("/v1/rules/preview", { rules: doc.rules, sample: Number(sample.value) || 50, k: 10, placement: placement.value.trim() || "home" });
      previewed = editor.value;
      saveBtn.disabled = false;
      showPreview(out, p);
    } catch (err) {
      replace(out, errorMsg(err));
    } finally {
      previewBtn.disabled = false;
    }
  });
  saveBtn.addEventListener("click", async () => {
    const doc = parse();
    if (!doc) return;
    saveBtn.disabled = true;
    try {
      const done = await put("/v1/rules", { rules: doc.rules, version: data.version });
      const warn = done.warnings.length ? ` Warnings: ${done.warnings.join("; ")}` : "";
      await loadRules(box, auditBox, state, msg("ok", `Saved as version ${done.change.version} by ${done.change.who}.${warn}`));
      await loadAudit(auditBox);
    } catch (err) {
      replace(out, errorMsg(err));
      saveBtn.disabled = false;
    }
  });
  replace(box, card("Merchandising rules",
    notice || null,
    h("p", {}, `Stored version ${data.version}; this worker serves version ${data.served_version ?? "–"}.`),
    table("Rules", [{ label: "Id", rowHeader: true }, { label: "Action" }, { label: "Items" }, { label: "Stages" },
      { label: "Placements" }, { label: "Enabled" }], data.rules.map(describeRule), { empty: "no rule stored" }),
    h("h3", {}, "Change the rules"), help, field("Rule set (JSON)", editor),
    h("div", { class: "inline actions" }, field("Placement", placement), field("Visitors to sample", sample), previewBtn, saveBtn),
    out));
}

function showPreview(out, p) {
  const changed = p.lists.filter((l) => l.changed);
  replace(out, msg(p.changed ? "info" : "ok",
    `Preview against stored version ${p.current_version} on ${p.visitors} recent visitors: ${p.changed} lists change ` +
    `(${fmt.pct(p.share_changed)}), ${p.empty} would be empty, ${p.rules_fallback} would fall back to no rules.`),
  p.warnings.length ? h("ul", { class: "plain" }, p.warnings.map((w) => h("li", {}, w))) : null,
  table("Lists that change", [{ label: "Visitor", rowHeader: true }, { label: "Stage" }, { label: "Enter" }, { label: "Leave" }],
    changed.slice(0, 50).map((l) => [l.visitor_id, l.stage, l.entered.join(", ") || "(order only)", l.left.join(", ") || "–"]),
    { empty: "no list changes", limit: true }));
}

async function loadAudit(box) {
  let a;
  try {
    a = await get("/v1/rules/audit?limit=20");
  } catch (err) {
    replace(box, card("Audit", errorMsg(err)));
    return;
  }
  replace(box, card("Audit",
    table("Changes of the rule set, newest first", [{ label: "Version", num: true }, { label: "Who" }, { label: "When" },
      { label: "Rules", num: true }, { label: "Added" }, { label: "Removed" }, { label: "Changed" }],
    a.entries.map((e) => [String(e.version), e.who, fmt.time(e.at), String(e.rules), (e.added || []).join(", ") || "–",
      (e.removed || []).join(", ") || "–", (e.changed || []).join(", ") || "–"]), { empty: "no change recorded" })));
}
