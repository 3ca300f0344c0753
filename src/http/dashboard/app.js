// corq dashboard. Plain JS, no library, no build step. Its only data source is
// /stats?format=json (polled every second); the buttons post nsqd's /topic/* and /channel/*
// actions and the peek view reads /channel/peek. Fields /stats has beyond the ones named
// below are shown as they come, so later additions appear without changing this file.
"use strict";

const REFRESH_MS = 1000;
const HISTORY = 60; // sparkline samples (one a second)

// Fields given their own column; anything else a topic or channel has is listed under "more".
const TOPIC_KNOWN = new Set(["topic_name", "channels", "depth", "backend_depth", "message_count",
  "message_bytes", "paused", "e2e_processing_latency", "quarantined"]);
const CHANNEL_KNOWN = new Set(["channel_name", "depth", "backend_depth", "in_flight_count",
  "deferred_count", "message_count", "requeue_count", "timeout_count", "client_count", "clients",
  "paused", "e2e_processing_latency"]);

const seen = { time: 0, counts: new Map(), rates: new Map(), history: new Map() };
let peekTarget = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtNum(n) {
  return typeof n === "number" ? n.toLocaleString("en-US", { maximumFractionDigits: 1 }) : String(n);
}

function fmtNs(ns) {
  if (ns < 1e3) return ns.toFixed(0) + " ns";
  if (ns < 1e6) return (ns / 1e3).toFixed(1) + " µs";
  if (ns < 1e9) return (ns / 1e6).toFixed(1) + " ms";
  return (ns / 1e9).toFixed(2) + " s";
}

// An extra field, formatted by its name's suffix.
function fmtField(key, v) {
  if (typeof v !== "number") return String(v);
  if (key.endsWith("_ratio")) return (v * 100).toFixed(1) + " %";
  if (key.endsWith("_ns")) return fmtNs(v);
  if (key.endsWith("_ms")) return fmtNs(v * 1e6);
  return fmtNum(v);
}

function extras(obj, known) {
  const out = [];
  for (const [k, v] of Object.entries(obj)) {
    if (known.has(k) || v === null || typeof v === "object") continue;
    out.push(el("span", { class: "extra", "data-field": k }, k.replace(/_/g, " ") + " " + fmtField(k, v)));
    out.push(" ");
  }
  return out;
}

function e2e(lat) {
  const ps = lat && lat.percentiles;
  if (!ps || ps.length === 0 || !lat.count) return "";
  return ps.map(p => "p" + +(p.quantile * 100).toFixed(2) + " " + fmtNs(p.value)).join(", ");
}

// Messages per second from the last two samples of a counter.
function rate(key, count, dt) {
  const prev = seen.counts.get(key);
  seen.counts.set(key, count);
  if (prev === undefined || dt <= 0) return null;
  return Math.max(0, count - prev) / dt;
}

function sparkline(values) {
  const w = 180, h = 36;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  if (values.length < 2) return svg;
  // Newest sample at the right edge; the window is HISTORY seconds wide.
  const max = Math.max(1, ...values);
  const x = i => (w - (values.length - 1 - i) * w / (HISTORY - 1)).toFixed(1);
  const pts = values.map((v, i) => `${x(i)},${(h - 2 - v / max * (h - 4)).toFixed(1)}`);
  const area = document.createElementNS(svg.namespaceURI, "polygon");
  area.setAttribute("class", "area");
  area.setAttribute("points", `${x(0)},${h} ${pts.join(" ")} ${w},${h}`);
  const line = document.createElementNS(svg.namespaceURI, "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.append(area, line);
  return svg;
}

function stat(label, value, field) {
  return el("div", { class: "stat" }, el("b", { "data-field": field }, value), el("small", {}, label));
}

function button(label, action, params, danger) {
  return el("button", { class: danger ? "danger" : "", "data-action": action, type: "button",
    onclick: () => act(action, params, danger) }, label);
}

async function act(action, params, confirmFirst) {
  const what = params.channel ? `channel ${params.topic}/${params.channel}` : `topic ${params.topic}`;
  if (confirmFirst && !window.confirm(`${action} ${what}?`)) return;
  const kind = params.channel ? "channel" : "topic";
  const r = await fetch(`/${kind}/${action}?` + new URLSearchParams(params), { method: "POST" });
  if (!r.ok) window.alert(`${action} ${what}: ${r.status} ${await r.text()}`);
  load();
}

function topicCard(t, dt) {
  const name = t.topic_name;
  const r = rate("t/" + name, t.message_count, dt);
  const hist = seen.history.get(name) || [];
  if (r !== null) { hist.push(r); if (hist.length > HISTORY) hist.shift(); }
  seen.history.set(name, hist);
  const params = { topic: name };
  const head = el("div", { class: "topic-head" },
    el("h2", {}, name),
    t.paused ? el("span", { class: "badge", "data-field": "paused" }, "paused") : null,
    t.quarantined ? el("span", { class: "badge bad", title: t.quarantined }, "quarantined") : null,
    stat("depth", fmtNum(t.depth), "depth"),
    stat("messages", fmtNum(t.message_count), "message_count"),
    stat("msg/s", r === null ? "–" : fmtNum(r), "rate"),
    sparkline(hist),
    e2e(t.e2e_processing_latency) ? stat("e2e", e2e(t.e2e_processing_latency), "e2e") : null,
    el("div", { class: "more" }, ...extras(t, TOPIC_KNOWN)),
    el("div", { class: "actions" },
      t.paused ? button("Unpause", "unpause", params) : button("Pause", "pause", params),
      button("Empty", "empty", params, true),
      button("Delete", "delete", params, true)));
  const rows = (t.channels || []).map(c => channelRow(name, c, dt));
  const table = rows.length === 0 ? el("p", { class: "muted" }, "no channels: messages wait for the first one") :
    el("table", {},
      el("thead", {}, el("tr", {}, ...["channel", "depth", "in flight", "deferred", "msg/s", "requeued",
        "timed out", "clients", "e2e", "more", ""].map(h => el("th", {}, h)))),
      el("tbody", {}, ...rows));
  return el("div", { class: "topic", "data-topic": name }, head, table);
}

function channelRow(topic, c, dt) {
  const r = rate(`c/${topic}/${c.channel_name}`, c.message_count, dt);
  const params = { topic, channel: c.channel_name };
  const num = (v, f) => el("td", { class: "num", "data-field": f }, fmtNum(v));
  return el("tr", { "data-channel": c.channel_name },
    el("td", {}, c.channel_name, c.paused ? el("span", { class: "badge" }, " paused") : null),
    num(c.depth, "depth"), num(c.in_flight_count, "in_flight_count"),
    num(c.deferred_count, "deferred_count"),
    el("td", { class: "num" }, r === null ? "–" : fmtNum(r)),
    num(c.requeue_count, "requeue_count"), num(c.timeout_count, "timeout_count"),
    num(c.client_count, "client_count"),
    el("td", {}, e2e(c.e2e_processing_latency)),
    el("td", {}, ...extras(c, CHANNEL_KNOWN)),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", "data-action": "peek-open" }, "Peek"),
      c.paused ? button("Unpause", "unpause", params) : button("Pause", "pause", params),
      button("Empty", "empty", params, true),
      button("Delete", "delete", params, true))));
}

function render(s, now) {
  const dt = seen.time ? (now - seen.time) / 1000 : 0;
  seen.time = now;
  document.getElementById("version").textContent = s.version ? "v" + s.version : "";
  document.getElementById("health").textContent = s.health || "";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  const topics = s.topics || [];
  const box = document.getElementById("topics");
  box.replaceChildren(...(topics.length ? topics.map(t => topicCard(t, dt)) :
    [el("p", { class: "muted" }, "No topics yet: publish to create one.")]));
}

async function load() {
  try {
    const r = await fetch("/stats?format=json&include_clients=false", { cache: "no-store" });
    render(await r.json(), performance.now());
  } catch (e) {
    document.getElementById("health").textContent = "cannot reach /stats: " + e;
  }
}

async function tick() {
  await load();
  setTimeout(tick, REFRESH_MS);
}

// ---- peek -------------------------------------------------------------------------------

function bodyText(b64) {
  const bin = atob(b64);
  const bytes = Uint8Array.from(bin, ch => ch.charCodeAt(0));
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch (_) {
    text = Array.from(bytes.slice(0, 256), b => b.toString(16).padStart(2, "0")).join(" ") + " (binary)";
  }
  return text.length > 500 ? text.slice(0, 500) + "…" : text;
}

function fmtTime(ns) {
  return ns ? new Date(ns / 1e6).toISOString().replace("T", " ").replace("Z", "") : "";
}

async function peek() {
  if (!peekTarget) return;
  const params = new URLSearchParams({ ...peekTarget,
    count: document.getElementById("peek-count").value,
    state: document.getElementById("peek-state").value });
  const err = document.getElementById("peek-error");
  const tbody = document.querySelector("#peek-table tbody");
  err.textContent = "";
  const r = await fetch("/channel/peek?" + params, { cache: "no-store" });
  const v = await r.json();
  if (!r.ok) { err.textContent = v.message || r.status; tbody.replaceChildren(); return; }
  tbody.replaceChildren(...v.messages.map(m => el("tr", {},
    el("td", {}, m.id), el("td", {}, m.state || ""), el("td", { class: "num" }, m.attempts),
    el("td", {}, fmtTime(m.timestamp)), el("td", {}, fmtTime(m.deliver_at)),
    el("td", { class: "body" }, bodyText(m.body_base64)))));
  if (v.truncated) err.textContent = "(cut short by the size budget)";
}

document.addEventListener("click", e => {
  const b = e.target.closest("button[data-action=peek-open]");
  if (!b) return;
  const row = b.closest("tr"), card = b.closest(".topic");
  peekTarget = { topic: card.dataset.topic, channel: row.dataset.channel };
  document.getElementById("peek-target").textContent = `${peekTarget.topic} / ${peekTarget.channel}`;
  document.getElementById("peek").hidden = false;
  peek();
}, true);
document.getElementById("peek-form").addEventListener("submit", e => { e.preventDefault(); peek(); });
document.getElementById("peek-close").addEventListener("click", () => {
  peekTarget = null;
  document.getElementById("peek").hidden = true;
});

tick();
