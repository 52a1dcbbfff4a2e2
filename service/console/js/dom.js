// DOM helpers: every text goes in through textContent / text nodes, never as HTML.
import { describe } from "./api.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "style") throw new Error("inline styles are not allowed (CSP)");
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

export const msg = (kind, text) =>
  h("p", { class: `msg msg-${kind}`, role: kind === "error" ? "alert" : "status" }, text);

export const errorMsg = (err) => msg("error", describe(err));

export function card(title, ...children) {
  const id = `h-${title.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h3", { id }, title), ...children);
}

// A table: columns [{label, num}], rows of cell values (strings, numbers or nodes).
// `limit`: a long list scrolls in its own box (focusable, so the keyboard scrolls it too).
export function table(caption, columns, rows, { empty = "Nothing to show.", limit = false } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, `${caption}: ${empty}`);
  const head = h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)));
  const body = rows.map((r) =>
    h("tr", {}, r.map((v, i) => {
      const cell = i === 0 && columns[0].rowHeader ? "th" : "td";
      return h(cell, { class: columns[i] && columns[i].num ? "num" : null, scope: cell === "th" ? "row" : null }, v);
    })),
  );
  return h("div", { class: limit ? "scroll limit" : "scroll", tabindex: limit ? "0" : null, role: limit ? "region" : null, "aria-label": limit ? caption : null },
    h("table", {}, h("caption", {}, caption), h("thead", {}, head), h("tbody", {}, body)));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function field(label, input) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

export function select(name, options, value) {
  return h("select", { name }, options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)));
}

export const fmt = {
  num(v, digits = 0) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
  },
  pct(v, digits = 1) {
    if (v === null || v === undefined) return "–";
    return `${(Number(v) * 100).toFixed(digits)} %`;
  },
  time(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  },
  duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Number(seconds);
    if (s < 120) return `${s.toFixed(0)} s`;
    if (s < 7200) return `${(s / 60).toFixed(1)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} days`;
  },
};

// A button that runs an async action once at a time, with its result shown in `out`.
export function actionButton(label, action, { kind = "", out = null, ariaLabel = null } = {}) {
  const btn = h("button", { type: "button", class: kind || null, "aria-label": ariaLabel }, label);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      await action(btn);
    } catch (err) {
      if (out) replace(out, errorMsg(err));
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

// An inline confirmation (no window.confirm): the question, a confirming and a cancelling button.
export function confirmBox(question, confirmLabel, onConfirm, onCancel) {
  const box = h("div", { class: "confirm", role: "alertdialog", "aria-label": question });
  const yes = h("button", { type: "button", class: "danger" }, confirmLabel);
  const no = h("button", { type: "button", class: "secondary" }, "Cancel");
  yes.addEventListener("click", () => onConfirm(box));
  no.addEventListener("click", () => onCancel(box));
  append(box, [h("p", {}, question), h("div", { class: "actions" }, yes, no)]);
  setTimeout(() => no.focus(), 0);
  return box;
}
