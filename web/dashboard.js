// dashboard.js - what web/index.html does: lists the counters
// (GET /api/v1/counters/names), shows their live values (GET
// /api/v1/counters?names=, every 2 s) and draws the history of the one
// clicked (GET /api/v1/counter/{name}/history) as an SVG chart. Plain JS,
// no framework and nothing loaded from elsewhere: the page must work with
// this api as the only thing it can reach.
//
// With auth on, the page itself is public but every API call needs a read
// token: a 401 shows a field for one, kept in sessionStorage (this tab
// only, gone when it closes) and sent as "Authorization: Bearer".
//
// Hooks for tests (tests/dashboard/check.mjs): each row is
// tr[data-name], its value cell td.value[data-value]; the chart's svg
// carries data-name, data-points (points drawn) and data-sum.
"use strict";

const VALUES_EVERY_MS = 2000;
const NAMES_EVERY_MS = 5000; // the list costs a PostgreSQL query
const CHART_EVERY_MS = 10000;
const LIST_LIMIT = 200; // rows shown; the filter narrows the list
const BATCH_MAX = 100; // names per batch read (API_BATCH_MAX)
const MAX_DOTS = 300; // beyond this the line alone is drawn
const TOKEN_KEY = "counter-dashboard-token";
const SVG_NS = "http://www.w3.org/2000/svg";

// Each range preset with the interval it starts with.
const RANGES = {
  hour: { ms: 3600e3, interval: "minute" },
  day: { ms: 86400e3, interval: "hour" },
  week: { ms: 7 * 86400e3, interval: "day" },
};

const $ = (id) => document.getElementById(id);

const state = {
  names: [],
  truncated: false,
  namesAt: 0, // when the list was last fetched (ms); 0: fetch now
  prefix: "",
  rows: new Map(), // name -> {tr, cells}
  selected: null,
  range: "hour",
  interval: "minute",
  chartAt: 0,
  chartSeq: 0, // answers to older chart requests are dropped
};

class AuthError extends Error {}

// One API call: the parsed JSON, or an Error carrying the API's message.
async function api(path) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try {
    body = await r.json();
  } catch (e) {
    body = null; // a body that is not JSON: report the status alone
  }
  if (r.status === 401) {
    showTokenForm(Boolean(token));
    throw new AuthError(token ? "the token was refused" : "a read token is needed");
  }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : "";
    throw new Error(`HTTP ${r.status}${msg ? ": " + msg : ""}`);
  }
  return body;
}

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(isError));
}

function showTokenForm(refused) {
  const form = $("token-form");
  form.hidden = false;
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  if (document.activeElement !== $("token")) $("token").focus();
}

// ------------------------------------------------------------- the list

async function loadNames() {
  const q = new URLSearchParams({ limit: String(LIST_LIMIT) });
  if (state.prefix) q.set("prefix", state.prefix);
  const r = await api(`/api/v1/counters/names?${q}`);
  state.names = r.names;
  state.truncated = r.truncated;
  state.namesAt = Date.now();
  renderRows();
}

function makeRow(name) {
  const tr = document.createElement("tr");
  tr.dataset.name = name;
  tr.tabIndex = 0;
  const cells = {};
  for (const key of ["name", "kind", "period", "value", "source", "updated"]) {
    const td = document.createElement("td");
    td.className = key;
    if (key === "value") td.classList.add("num");
    tr.appendChild(td);
    cells[key] = td;
  }
  cells.name.textContent = name;
  tr.addEventListener("click", () => select(name));
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter") select(name);
  });
  return { tr, cells };
}

// Puts the rows in the order of state.names, keeping the ones that stay.
function renderRows() {
  const tbody = document.querySelector("#counters tbody");
  const keep = new Set(state.names);
  for (const [name, row] of state.rows) {
    if (!keep.has(name)) {
      row.tr.remove();
      state.rows.delete(name);
    }
  }
  for (const name of state.names) {
    let row = state.rows.get(name);
    if (!row) {
      row = makeRow(name);
      state.rows.set(name, row);
    }
    row.tr.classList.toggle("selected", name === state.selected);
    tbody.appendChild(row.tr); // moves an existing row into place
  }
  $("empty").hidden = state.names.length > 0;
  $("count").textContent =
    `${state.names.length} counter${state.names.length === 1 ? "" : "s"}` +
    (state.truncated ? ` (the first ${LIST_LIMIT}: filter to see others)` : "");
}

function formatTime(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function fillRow(row, c) {
  const cells = row.cells;
  cells.kind.textContent = c.kind + (c.approximate ? " (approximate)" : "");
  cells.period.textContent = c.period || "";
  cells.value.dataset.value = String(c.value);
  cells.value.textContent = (c.approximate ? "≈ " : "") + c.value.toLocaleString();
  if (c.stale) {
    cells.source.textContent = `${c.source}, stale`;
    cells.source.title = c.as_of ? `as of ${formatTime(c.as_of)}` : "";
  } else {
    cells.source.textContent = c.source;
    cells.source.title = "";
  }
  cells.source.classList.toggle("stale", Boolean(c.stale));
  cells.updated.textContent = formatTime(c.last_updated);
  cells.updated.title = c.last_updated || "";
}

async function loadValues() {
  const names = state.names.slice();
  const chunks = [];
  for (let i = 0; i < names.length; i += BATCH_MAX) chunks.push(names.slice(i, i + BATCH_MAX));
  const answers = await Promise.all(
    chunks.map((chunk) => api(`/api/v1/counters?names=${chunk.map(encodeURIComponent).join(",")}`)),
  );
  for (const answer of answers) {
    for (const c of answer.counters) {
      const row = state.rows.get(c.name);
      if (row) fillRow(row, c);
    }
  }
}

// The refresh loop: one pass at a time; kick() runs one now.
let timer = null;
let running = false;
let again = false;

async function refresh() {
  if (running) {
    again = true;
    return;
  }
  running = true;
  try {
    if (Date.now() - state.namesAt >= NAMES_EVERY_MS) await loadNames();
    await loadValues();
    setStatus(`updated ${new Date().toLocaleTimeString()}`);
    if (!$("token-form").hidden && sessionStorage.getItem(TOKEN_KEY)) $("token-form").hidden = true;
  } catch (e) {
    setStatus(e.message, true);
    if (e instanceof AuthError) {
      // nothing to show until a token is given: the form kicks again
      running = again = false;
      return;
    }
  }
  if (state.selected && Date.now() - state.chartAt >= CHART_EVERY_MS) loadChart();
  running = false;
  clearTimeout(timer);
  timer = setTimeout(refresh, again ? 0 : VALUES_EVERY_MS);
  again = false;
}

function kick() {
  clearTimeout(timer);
  refresh();
}

// ------------------------------------------------------------ the chart

function select(name) {
  state.selected = name;
  for (const [n, row] of state.rows) row.tr.classList.toggle("selected", n === name);
  $("detail").hidden = false;
  $("detail-name").textContent = name;
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  $("detail").scrollIntoView({ block: "nearest" });
  clearChart();
  loadChart();
}

function unselect() {
  state.selected = null;
  state.chartSeq++;
  for (const row of state.rows.values()) row.tr.classList.remove("selected");
  $("detail").hidden = true;
  history.replaceState(null, "", location.pathname + location.search);
}

function setRange(range) {
  state.range = range;
  state.interval = RANGES[range].interval;
  $("interval").value = state.interval;
  showControls();
  loadChart();
}

function showControls() {
  for (const b of document.querySelectorAll("[data-range]"))
    b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
}

async function loadChart() {
  const name = state.selected;
  if (!name) return;
  const seq = ++state.chartSeq;
  state.chartAt = Date.now();
  const to = new Date();
  const from = new Date(to.getTime() - RANGES[state.range].ms);
  const q = new URLSearchParams({
    from: from.toISOString(),
    to: to.toISOString(),
    interval: state.interval,
  });
  try {
    const h = await api(`/api/v1/counter/${encodeURIComponent(name)}/history?${q}`);
    if (seq === state.chartSeq) drawChart(name, h);
  } catch (e) {
    if (seq === state.chartSeq) {
      clearChart();
      $("chart-note").textContent = e.message;
    }
  }
}

function el(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function clearChart() {
  const svg = $("chart");
  svg.replaceChildren();
  svg.dataset.points = "0";
  svg.dataset.sum = "0";
  delete svg.dataset.name;
}

function tickLabel(iso, interval) {
  // the API writes each start in the counter's zone: keep its wall time
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  if (!m) return iso;
  return interval === "day" ? m[1] : `${m[1].slice(5)} ${m[2]}`;
}

function drawChart(name, h) {
  const svg = $("chart");
  const points = h.points;
  const values = points.map((p) => p.value);
  const width = Math.max(svg.clientWidth || 0, 320);
  const height = 260;
  const pad = { left: 64, right: 16, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  let lo = Math.min(0, ...values);
  let hi = Math.max(0, ...values);
  if (hi === lo) hi = lo + 1;
  const n = points.length;
  const x = (i) => pad.left + (n === 1 ? plotW / 2 : (i * plotW) / (n - 1));
  const y = (v) => pad.top + ((hi - v) * plotH) / (hi - lo);

  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.appendChild(el("line", { class: "axis", x1: pad.left, y1: pad.top, x2: pad.left, y2: pad.top + plotH }));
  svg.appendChild(el("line", { class: "axis", x1: pad.left, y1: pad.top + plotH, x2: pad.left + plotW, y2: pad.top + plotH }));
  if (lo < 0) svg.appendChild(el("line", { class: "zero", x1: pad.left, y1: y(0), x2: pad.left + plotW, y2: y(0) }));
  for (const v of new Set([hi, lo, 0])) {
    svg.appendChild(el("text", { x: pad.left - 6, y: y(v) + 4, "text-anchor": "end" }, v.toLocaleString()));
  }
  if (n > 0) {
    svg.appendChild(el("text", { x: pad.left, y: height - 8 }, tickLabel(points[0].start, h.interval)));
    if (n > 1)
      svg.appendChild(el("text", { x: pad.left + plotW, y: height - 8, "text-anchor": "end" }, tickLabel(points[n - 1].start, h.interval)));
    if (n > 4) {
      const mid = Math.floor((n - 1) / 2);
      svg.appendChild(el("text", { x: x(mid), y: height - 8, "text-anchor": "middle" }, tickLabel(points[mid].start, h.interval)));
    }
    const coords = points.map((p, i) => `${x(i).toFixed(1)},${y(p.value).toFixed(1)}`);
    svg.appendChild(el("polyline", { class: "line", points: coords.join(" ") }));
    if (n <= MAX_DOTS) {
      points.forEach((p, i) => {
        const dot = el("circle", { class: "point", cx: x(i).toFixed(1), cy: y(p.value).toFixed(1), r: 2.5 });
        dot.appendChild(el("title", {}, `${tickLabel(p.start, h.interval)}: ${p.value.toLocaleString()}`));
        svg.appendChild(dot);
      });
    }
  }
  const sum = values.reduce((a, b) => a + b, 0);
  svg.dataset.name = name;
  svg.dataset.points = String(n);
  svg.dataset.sum = String(sum);
  $("chart-note").textContent =
    `${n} point${n === 1 ? "" : "s"}, the change per ${h.interval}` +
    (h.approximate ? " (approximate)" : "") +
    `, in ${h.timezone}; ${sum.toLocaleString()} over the range. ` +
    "History is what PostgreSQL has folded in: it trails live values by a moment.";
}

// ---------------------------------------------------------------- start

function start() {
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    $("token-form").hidden = true;
    state.namesAt = 0;
    kick();
    if (state.selected) loadChart();
  });
  let debounce = null;
  $("filter").addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => {
      state.prefix = $("filter").value.trim();
      state.namesAt = 0;
      kick();
    }, 300);
  });
  for (const b of document.querySelectorAll("[data-range]")) {
    b.addEventListener("click", () => setRange(b.dataset.range));
  }
  $("interval").addEventListener("change", () => {
    state.interval = $("interval").value;
    loadChart();
  });
  $("close").addEventListener("click", unselect);
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => state.selected && loadChart(), 200);
  });
  $("interval").value = state.interval;
  showControls();
  let fromHash = "";
  try {
    fromHash = decodeURIComponent(location.hash.slice(1));
  } catch (e) {
    fromHash = ""; // a malformed #fragment selects nothing
  }
  if (/^[A-Za-z0-9_.-]{1,128}$/.test(fromHash)) select(fromHash);
  refresh();
}

start();
