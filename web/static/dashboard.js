// orders_app dashboard: live charts (uPlot) from /analytics/stream, order lookup with a
// history timeline (GET /orders/{id}), and a test-order form (POST /orders) followed live.
"use strict";

const TERMINAL = ["FULFILLED", "REJECTED", "PAYMENT_FAILED", "CANCELLED"];
const COLORS = {FULFILLED: "#2e9e5b", REJECTED: "#c0392b", PAYMENT_FAILED: "#e67e22", CANCELLED: "#8e44ad"};
const PALETTE = ["#2f6fb0", "#2e9e5b", "#c0392b", "#e67e22", "#8e44ad", "#16a085", "#7f8c8d", "#d35400"];
const HISTORY_S = 600;
const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (x) => Number(x).toLocaleString(undefined, {minimumFractionDigits: 2, maximumFractionDigits: 2});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- state fed by the stream -------------------------------------------------------------
const countries = {};          // country -> latest CountryStats
const windows = {};            // "country|start" -> {start, orders, revenue}
const throughput = new Map();  // bucket start -> {status: orders/s}
let samples = [];              // [{at, workers, latency: {p50, p99}, lag: {agent: n}}]
let deadPerMinute = [];        // [[minute start, letters]]
let revenueNames = [];         // the revenue chart's countries, highest first

// ---- charts --------------------------------------------------------------------------------
const charts = {};
const hasCharts = typeof window.uPlot === "function";

function plotWidth(figure) { return Math.max(200, figure.querySelector(".plot").clientWidth); }

// (Re)create the chart in figure `id` when its series labels change; returns it.
function chart(id, labels, options) {
  const figure = document.getElementById(id);
  const current = charts[id];
  if (current && current.labels.join() === labels.join()) return current;
  if (current) current.plot.destroy();
  const opts = {
    width: plotWidth(figure), height: 200, legend: {live: false},
    cursor: {drag: {x: false, y: false}},
    ...options.opts,
    series: [{}, ...labels.map((label, i) => ({label, width: 2, points: {show: false}, ...options.series(label, i)}))],
  };
  const plot = new uPlot(opts, [[], ...labels.map(() => [])], figure.querySelector(".plot"));
  return (charts[id] = {plot, labels, updates: 0, figure});
}

function update(c, data) {
  c.plot.setData(data);
  c.updates += 1;
  c.figure.dataset.updates = String(c.updates);
  c.figure.dataset.points = String(data[0].length);
}

// Time axes tick in whole seconds (minutes for per-minute data), never in fractions.
const timeAxis = (incrs) => ({axes: [{incrs}, {}]});
const SECONDS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600];
const line = (colors) => ({
  series: (label, i) => ({stroke: colors[label] || PALETTE[i % PALETTE.length]}),
  opts: timeAxis(SECONDS),
});
const bars = (color) => ({stroke: color, fill: color + "cc", paths: uPlot.paths.bars({size: [0.7, 60]})});

function drawCharts() {
  const now = Date.now() / 1000;
  for (const t of throughput.keys()) if (t < now - HISTORY_S) throughput.delete(t);
  const buckets = [...throughput.keys()].sort((a, b) => a - b);
  update(chart("chart-throughput", TERMINAL, line(COLORS)),
    [buckets, ...TERMINAL.map((s) => buckets.map((t) => throughput.get(t)[s] ?? 0))]);

  const at = samples.map((s) => s.at);
  const ms = (v) => (v == null ? null : v * 1000);
  update(chart("chart-latency", ["p50", "p99"], line({p50: "#2f6fb0", p99: "#c0392b"})),
    [at, samples.map((s) => ms(s.latency.p50)), samples.map((s) => ms(s.latency.p99))]);

  const agents = [...new Set(samples.flatMap((s) => Object.keys(s.lag)))].sort();
  update(chart("chart-lag", agents, line({})), [at, ...agents.map((a) => samples.map((s) => s.lag[a] ?? null))]);

  const atLeast = (n) => ({y: {range: (u, min, max) => [0, Math.max(n, max * 1.1)]}});
  update(chart("chart-dead", ["dead letters"], {series: () => bars("#c0392b"), opts: {scales: atLeast(5), ...timeAxis([60, 120, 300, 600])}}),
    [deadPerMinute.map((d) => d[0]), deadPerMinute.map((d) => d[1])]);

  const byRevenue = Object.values(countries).sort((a, b) => Number(b.revenue) - Number(a.revenue));
  revenueNames = byRevenue.map((c) => c.country);
  update(chart("chart-revenue", ["revenue"], {
    series: () => bars("#2f6fb0"),
    opts: {
      scales: {x: {time: false, range: (u, min, max) => [min - 0.5, max + 0.5]}},
      axes: [{splits: () => revenueNames.map((_, i) => i), values: (u, splits) => splits.map((i) => revenueNames[i] ?? "")}, {}],
    },
  }), [revenueNames.map((_, i) => i), byRevenue.map((c) => Number(c.revenue))]);
}

window.addEventListener("resize", () => {
  for (const c of Object.values(charts)) c.plot.setSize({width: plotWidth(c.figure), height: 200});
});

// ---- cards and tables ----------------------------------------------------------------------
function drawTables() {
  const rows = Object.values(countries).sort((a, b) => b.orders - a.orders);
  $("#countries tbody").innerHTML = rows.map((c) =>
    `<tr><td>${esc(c.country)}</td><td>${c.orders}</td><td>${fmt(c.revenue)}</td><td>${fmt(c.average_order_value)}</td>` +
    TERMINAL.map((s) => `<td>${c.by_status[s] || 0}</td>`).join("") + "</tr>").join("");
  const totals = {orders: 0};
  TERMINAL.forEach((s) => (totals[s] = 0));
  rows.forEach((c) => { totals.orders += c.orders; TERMINAL.forEach((s) => (totals[s] += c.by_status[s] || 0)); });
  totals.IN_FLIGHT = totals.orders - TERMINAL.reduce((n, s) => n + totals[s], 0);
  const keys = ["IN_FLIGHT", ...TERMINAL];
  $("#cards").innerHTML = `<div class="card">orders<b>${totals.orders}</b></div>` +
    keys.map((k) => `<div class="card">${k.toLowerCase().replace("_", " ")}<b>${totals[k]}</b></div>`).join("");
  $("#bar").innerHTML = totals.orders ? keys.map((k) =>
    `<span class="${k}" style="width:${100 * totals[k] / totals.orders}%" title="${k}"></span>`).join("") : "";
  const perMinute = {};
  Object.values(windows).forEach((w) => {
    const m = perMinute[w.start] || (perMinute[w.start] = {orders: 0, revenue: 0});
    m.orders += w.orders; m.revenue += Number(w.revenue);
  });
  $("#windows tbody").innerHTML = Object.keys(perMinute).sort().reverse().slice(0, 10).map((s) =>
    `<tr><td>${new Date(s * 1000).toLocaleTimeString()}</td><td>${perMinute[s].orders}</td><td>${fmt(perMinute[s].revenue)}</td></tr>`).join("");
}

// Redraw at most once per frame, whatever the event rate.
let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    drawTables();
    if (hasCharts) drawCharts();
  });
}

// ---- the stream ----------------------------------------------------------------------------
const source = new EventSource("/analytics/stream?coalesce=250&pipeline=1");
source.onopen = () => $("#conn").classList.add("on");
source.onerror = () => $("#conn").classList.remove("on");
source.addEventListener("country", (e) => {
  const c = JSON.parse(e.data);
  countries[c.country] = c;
  if (c.window_start != null) {
    windows[c.country + "|" + c.window_start] = {start: c.window_start, orders: c.window_orders || 0, revenue: c.window_revenue || 0};
  }
  schedule();
});
source.addEventListener("dead_letter", (e) => {
  const d = JSON.parse(e.data);
  const ul = $("#dead");
  if (ul.firstElementChild && ul.firstElementChild.classList.contains("muted")) ul.innerHTML = "";
  const li = document.createElement("li");
  li.textContent = `${d.topic}[${d.partition}]@${d.offset} (${d.agent}): ${d.error}`;
  ul.prepend(li);
  while (ul.children.length > 15) ul.lastElementChild.remove();
});
source.addEventListener("pipeline_history", (e) => {
  const h = JSON.parse(e.data);
  samples = h.samples;
  throughput.clear();
  h.throughput.forEach(([t, rates]) => throughput.set(t, rates));
  deadPerMinute = h.dead_letters;
  schedule();
});
source.addEventListener("pipeline", (e) => {
  const s = JSON.parse(e.data);
  samples.push({at: s.at, workers: s.workers, latency: s.latency, lag: s.lag});
  samples = samples.filter((x) => x.at >= s.at - HISTORY_S);
  s.throughput.forEach(([t, rates]) => throughput.set(t, rates));
  deadPerMinute = s.dead_letters;
  $("#workers").textContent = String(s.workers);
  schedule();
});

// ---- one order: lookup and follow ----------------------------------------------------------
function timeOf(at) {
  const d = new Date(at * 1000);
  return d.toLocaleTimeString(undefined, {hour12: false}) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function renderOrder(view, doc) {
  const start = doc.history.length ? doc.history[0].at : 0;
  const lines = doc.lines.map((l) =>
    `<tr><td>${esc(l.sku)}</td><td>${esc(l.quantity)}</td><td>${esc(l.unit_price)}</td>` +
    `<td>${fmt(Number(l.unit_price) * Number(l.quantity))}</td></tr>`).join("");
  const steps = doc.history.map((h) =>
    `<li class="${TERMINAL.includes(h.status) ? "terminal" : ""}"><span class="badge ${esc(h.status)}">${esc(h.status)}</span>` +
    `<time>${timeOf(h.at)}</time> <span class="muted">+${Math.round((h.at - start) * 1000)} ms</span></li>`).join("");
  view.dataset.status = doc.status;
  view.innerHTML =
    `<div class="head"><span class="id">${esc(doc.order_id)}</span><span class="badge ${esc(doc.status)} status">${esc(doc.status)}</span>` +
    `<span>${esc(doc.customer_id)} &middot; ${esc(doc.country)} &middot; ${esc(doc.total)} ${esc(doc.currency)}</span>` +
    (doc.reasons.length ? `<span class="error">${doc.reasons.map(esc).join(", ")}</span>` : "") + "</div>" +
    `<table><thead><tr><th>sku</th><th>qty</th><th>unit price</th><th>line</th></tr></thead><tbody>${lines}</tbody></table>` +
    `<ol class="timeline">${steps}</ol>`;
}

function note(view, html, cls = "muted") {
  delete view.dataset.status;
  view.innerHTML = `<p class="${cls}">${html}</p>`;
}

// Poll GET /orders/{id} until the order is terminal (or another follow takes the view over).
// `patient`: a 404 means the order has not reached the pipeline yet (CDC), keep waiting.
async function follow(view, id, patient) {
  const me = (view.dataset.follow = String(Math.random()));
  const deadline = Date.now() + 120000;
  while (view.dataset.follow === me && Date.now() < deadline) {
    let resp = null;
    try { resp = await fetch(`/orders/${encodeURIComponent(id)}`); } catch { /* worker restarting */ }
    if (view.dataset.follow !== me) return;
    if (resp && resp.ok) {
      const doc = await resp.json();
      renderOrder(view, doc);
      if (TERMINAL.includes(doc.status)) return;
    } else if (resp && resp.status === 404 && !patient) {
      return note(view, `No order <code>${esc(id)}</code>.`, "error");
    } else if (resp && resp.status === 404) {
      note(view, `Order <code>${esc(id)}</code> committed; waiting for it to reach the pipeline&hellip;`);
    }
    await sleep(400);
  }
}

$("#lookup").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("#lookup-id").value.trim();
  if (id) follow($("#lookup-view"), id, false);
});

const form = $("#place");
const tokenField = form.querySelector(".token");
tokenField.hidden = document.body.dataset.tokenRequired !== "true";
const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random()}`);

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = Object.fromEntries(new FormData(form));
  const view = $("#place-view");
  const body = {
    customer_id: f.customer_id, country: f.country.toUpperCase(), currency: f.currency.toUpperCase(),
    lines: [{sku: f.sku, quantity: Number(f.quantity), unit_price: f.unit_price}],
    payment_method: f.payment_method,
  };
  const headers = {"Content-Type": "application/json", "Idempotency-Key": newKey()};
  if (f.token) headers.Authorization = `Bearer ${f.token}`;
  note(view, "Placing the order&hellip;");
  let resp;
  try {
    resp = await fetch("/orders", {method: "POST", headers, body: JSON.stringify(body)});
  } catch (err) {
    return note(view, `Could not reach the worker: ${esc(err)}`, "error");
  }
  const answer = await resp.json().catch(() => ({}));
  if (resp.status === 401) {
    tokenField.hidden = false;
    return note(view, "This API needs a bearer token (<code>ORDERS_API_TOKEN</code>): enter it above.", "error");
  }
  if (resp.status === 422 && answer.errors) {
    return note(view, answer.errors.map((x) => `${esc(x.field)}: ${esc(x.message)}`).join("<br>"), "error");
  }
  if (resp.status !== 201) return note(view, `HTTP ${resp.status}: ${esc(answer.error || "")}`, "error");
  follow(view, answer.order_id, true);
});

if (!hasCharts) $("#nocharts").hidden = false;
