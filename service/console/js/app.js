// The console's shell: the API key form, the page tabs (URL fragments) and the page in <main>.
import { clearKey, getKey, setKey } from "./api.js";
import { destroyAll } from "./charts.js";
import { h, msg, replace } from "./dom.js";
import * as catalog from "./pages/catalog.js";
import * as experiments from "./pages/experiments.js";
import * as journey from "./pages/journey.js";
import * as models from "./pages/models.js";
import * as visitor from "./pages/visitor.js";

const PAGES = { journey, visitor, experiments, catalog, models };
const main = document.getElementById("main");

function showKeyState() {
  const key = getKey();
  const state = document.getElementById("key-state");
  state.textContent = key ? `key set (…${key.slice(-4)})` : "no key";
  document.getElementById("forget-key").disabled = !key;
}

function pageName() {
  const name = location.hash.replace(/^#/, "").split("/")[0];
  return Object.hasOwn(PAGES, name) ? name : "journey";
}

// Each route bumps this; only the latest one may say the page is done (an older render can finish later).
let routed = 0;

async function route() {
  const mine = ++routed;
  main.setAttribute("aria-busy", "true");
  try {
    await show();
  } finally {
    // the page and its data are rendered (assistive technology reads it now; the benchmark waits for it)
    if (mine === routed) main.setAttribute("aria-busy", "false");
  }
}

async function show() {
  const name = pageName();
  for (const a of document.querySelectorAll(".tabs a")) {
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  destroyAll();
  const page = PAGES[name];
  document.title = `${page.title} · journeyrec console`;
  const heading = h("h2", {}, page.title);
  if (!getKey()) {
    replace(main, heading, msg("info", "No data without an API key: enter the operator's key above (it is kept for this browser tab only)."));
    return;
  }
  const body = h("div", { class: "page", "data-page": name });
  replace(main, heading, body);
  await page.render(body);
}

document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("api-key");
  const key = input.value.trim();
  input.value = "";
  if (key) setKey(key);
  showKeyState();
  route();
});

document.getElementById("forget-key").addEventListener("click", () => {
  clearKey();
  showKeyState();
  route();
});

window.addEventListener("hashchange", () => {
  route();
  main.focus();
});

showKeyState();
route();
