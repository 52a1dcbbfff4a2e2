// Charts with the vendored Chart.js (global `Chart`, loaded before the modules); one place destroys them.
const live = new Set();

export const STAGES = ["awareness", "consideration", "decision", "retention", "advocacy"];
export const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f",
  "#ff9da7", "#bab0ac"];

export function chart(canvas, config) {
  const base = {
    animation: false,
    responsive: true,
    maintainAspectRatio: false,
    plugins: { legend: { position: "bottom" } },
  };
  const c = new window.Chart(canvas, { ...config, options: { ...base, ...(config.options || {}) } });
  live.add(c);
  return c;
}

export function destroyAll() {
  for (const c of live) c.destroy();
  live.clear();
}

// A canvas in a sized box, described for screen readers (the numbers are also in a table beside it).
export function chartBox(label, { tall = false } = {}) {
  const box = document.createElement("div");
  box.className = tall ? "chart-box tall" : "chart-box";
  const canvas = document.createElement("canvas");
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  box.append(canvas);
  return { box, canvas };
}
