// The swarmfs dashboard: polls /api/state every second and redraws; draws one file's
// chunk map from /api/chunks. No framework, no build step: this file is served as is.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: "Bearer " + token } : {};
const withToken = (url) => (token ? url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token) : url);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function duration(ms) {
  if (ms == null) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function card(n, label, cls) {
  return el("div", { class: "card " + (cls || "") }, el("div", { class: "n" }, String(n)), el("div", { class: "l" }, label));
}

function renderSummary(state) {
  const peers = state.peers;
  const live = peers.filter((p) => p.state === "up" || p.state === "draining").length;
  const used = peers.reduce((a, p) => a + p.used, 0);
  const cap = peers.reduce((a, p) => a + p.capacity, 0);
  const cards = [card(live + " / " + peers.length, "peers live", live < peers.length ? "warn" : "")];
  cards.push(card(bytes(used), "stored of " + bytes(cap)));
  const h = state.health;
  if (h) {
    const f = h.files;
    cards.push(card(f.healthy, "files healthy"));
    cards.push(card(f.under_replicated + f.repairing, "files under-replicated", f.under_replicated + f.repairing ? "warn" : ""));
    cards.push(card(f.lost, "files lost", f.lost ? "bad" : ""));
    cards.push(card(h.repair_queued + h.repair_in_flight, "chunks waiting for repair", h.repair_queued ? "warn" : ""));
    cards.push(card(h.repaired_chunks, "chunks repaired (" + bytes(h.repaired_bytes) + ")"));
  }
  document.getElementById("summary").replaceChildren(...cards);
}

function renderPeers(peers) {
  const rows = peers.map((p) => {
    const pct = p.capacity ? Math.min(100, (100 * p.used) / p.capacity) : 0;
    const bar = el("span", { class: "bar" }, el("span"));
    bar.firstChild.style.width = pct.toFixed(1) + "%";
    return el(
      "tr",
      { "data-node": p.short_id, "data-state": p.state },
      el("td", { title: p.node_id }, p.short_id),
      el("td", { class: "state" }, p.state),
      el("td", {}, p.reach),
      el("td", {}, bar, bytes(p.used) + " / " + bytes(p.capacity)),
      el("td", { class: "num" }, String(p.chunks)),
      el("td", { class: "num" }, String(p.load)),
      el("td", {}, duration(p.down_for_ms)),
      el("td", { class: "num" }, p.sole_copies == null ? "" : String(p.sole_copies)),
      el("td", {}, p.addrs.join(", ")),
    );
  });
  document.querySelector("#peers tbody").replaceChildren(...rows);
}

function renderWorkers(h) {
  const rows = (h ? h.workers : []).map((w) =>
    el("tr", {}, el("td", {}, w.name), el("td", {}, w.state), el("td", { class: "num" }, String(w.done)),
      el("td", { class: "num" }, String(w.errors)), el("td", { title: w.last_error || "" }, w.detail)));
  document.querySelector("#workers tbody").replaceChildren(...rows);
  const lost = h && h.lost_files.length ? "Lost files (no live copy): " + h.lost_files.join(", ") : "";
  document.getElementById("lost").textContent = lost;
}

function renderEvents(events) {
  const items = events.slice(0, 50).map((e) =>
    el("li", {}, el("time", {}, new Date(e.at_ms).toLocaleTimeString()), e.text));
  document.getElementById("events").replaceChildren(...items);
}

function setStatus(text, cls) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = "status " + cls;
}

async function refresh() {
  try {
    const r = await fetch("/api/state", { headers: auth, cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()).trim());
    const state = await r.json();
    renderSummary(state);
    renderPeers(state.peers);
    renderWorkers(state.health);
    renderEvents(state.events);
    if (state.error) setStatus("tracker unreachable: " + state.error, "stale");
    else setStatus("live · updated " + new Date(state.updated_ms).toLocaleTimeString(), "live");
  } catch (e) {
    setStatus("gateway unreachable: " + e.message, "stale");
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

let mapPath = null;
async function drawMap() {
  if (!mapPath) return;
  const info = document.getElementById("mapinfo");
  try {
    const r = await fetch("/api/chunks?path=" + encodeURIComponent(mapPath), { headers: auth, cache: "no-store" });
    if (!r.ok) throw new Error((await r.text()).trim());
    const m = await r.json();
    info.textContent = m.chunks + " chunks of " + bytes(m.chunk_size) + ", R = " + m.replicas +
      (m.shown < m.chunks ? " (first " + m.shown + " shown)" : "");
    const cols = Math.min(m.shown, 128);
    const bands = Math.ceil(m.shown / cols) || 1;
    const cell = Math.max(4, Math.min(16, Math.floor(900 / Math.max(cols, 1))));
    const label = 80, rows = m.peers.length, bandH = rows * (cell + 1) + 8;
    const root = svg("svg", { width: label + cols * (cell + 1), height: bands * bandH, role: "img" });
    const title = svg("title", {});
    title.textContent = "Chunk map of " + m.path + ": a column per chunk, a row per peer";
    root.append(title);
    for (let b = 0; b < bands; b++) {
      m.peers.forEach((p, row) => {
        const y = b * bandH + row * (cell + 1);
        const t = svg("text", { x: 0, y: y + cell - 1 });
        t.textContent = p.short_id + (p.state === "up" ? "" : " (" + p.state + ")");
        root.append(t);
      });
      for (let c = 0; c < cols; c++) {
        const i = b * cols + c;
        if (i >= m.shown) break;
        const held = m.holders[i], cached = m.cached[i];
        const liveCopies = held.concat(cached).filter((p) => m.peers[p].state === "up" || m.peers[p].state === "draining").length;
        m.peers.forEach((p, row) => {
          const cls = held.includes(row) ? "held" : cached.includes(row) ? "cached" : liveCopies === 0 ? "lost" : "none";
          const rect = svg("rect", { x: label + c * (cell + 1), y: b * bandH + row * (cell + 1), width: cell, height: cell, class: cls, "data-chunk": i, "data-peer": p.short_id });
          const tip = svg("title", {});
          tip.textContent = "chunk " + i + " on " + p.short_id + ": " + cls;
          rect.append(tip);
          root.append(rect);
        });
      }
    }
    document.getElementById("map").replaceChildren(root);
  } catch (e) {
    info.textContent = "cannot draw " + mapPath + ": " + e.message;
    document.getElementById("map").replaceChildren();
  }
}

async function listFiles() {
  try {
    const r = await fetch("/files/", { headers: { ...auth, Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) return;
    const entries = await r.json();
    const options = entries.filter((e) => e.kind === "file").map((e) => el("option", { value: e.path }));
    document.getElementById("files").replaceChildren(...options);
  } catch (e) {
    // The file list is a convenience; the path can be typed.
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("browse").href = withToken("/files/");
  document.getElementById("mapform").addEventListener("submit", (ev) => {
    ev.preventDefault();
    mapPath = document.getElementById("mappath").value.trim() || null;
    drawMap();
  });
  refresh();
  listFiles();
  setInterval(refresh, 1000);
  setInterval(drawMap, 3000);
});
