// The diaspora dashboard: renders the frames the server sends as
// server-sent events (one a second) and asks /api/lineage for the explorer.
// Plain JavaScript, no build step, no outside fetch. Every value from the
// node is put in the page as text (never as HTML).
"use strict";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(id, ...children) {
  const e = document.getElementById(id);
  e.replaceChildren(...children.flat());
  return e;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];
function bytes(n) {
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + UNITS[i];
}
function rate(n) {
  if (n === 0) return "0";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " k";
  return n >= 10 ? n.toFixed(0) : n.toFixed(1);
}
function duration(ms) {
  const s = ms / 1000;
  if (s >= 86400) return (s / 86400).toFixed(1) + " d";
  if (s >= 3600) return (s / 3600).toFixed(1) + " h";
  if (s >= 60) return (s / 60).toFixed(0) + " min";
  return s.toFixed(0) + " s";
}
function retention(t) {
  const parts = [];
  if (t.retention_bytes > 0) parts.push(bytes(t.retention_bytes) + "/partition");
  if (t.retention_ms > 0) parts.push(duration(t.retention_ms));
  return parts.length ? parts.join(", ") : "node default";
}
function time(us) {
  return us > 0 ? new Date(us / 1000).toLocaleTimeString() : "";
}

function renderNode(f) {
  const n = f.node;
  if (!n || !n.node_id) {
    fill("node", f.error || "no answer from the node yet");
    return;
  }
  fill("node",
    `node ${n.node_id} · auth ${n.auth || "?"} · up ${duration(n.uptime_s * 1000)} · ` +
    `${n.topics} topics, ${n.partitions} partitions · in ${rate(n.items_per_s)} items/s ` +
    `(${bytes(n.bytes_per_s)}/s) · out ${rate(n.fetched_items_per_s)} items/s · ` +
    `${n.connections_open} connections · ${bytes(n.storage_bytes)} on disk` +
    (f.error ? " · " + f.error : ""));
}

function renderTopics(f) {
  const rows = f.topics.map(t => {
    const lag = t.groups.length
      ? t.groups.map(g => `${g.group}: ${g.lag}`).join(", ")
      : "";
    const parts = t.partitions.map(p =>
      `p${p.partition} ${p.start_offset}..${p.next_offset}` +
      (p.items_per_s > 0 ? ` (${rate(p.items_per_s)}/s)` : "")).join(" · ");
    return el("tr", { "data-topic": t.name },
      el("td", { class: "name" }, t.name),
      el("td", { class: "partitions", title: parts }, t.partitions.length),
      el("td", { class: "num rate-items" + (t.items_per_s > 0 ? " active" : ""),
                 "data-value": t.items_per_s }, rate(t.items_per_s)),
      el("td", { class: "num rate-bytes", "data-value": t.bytes_per_s }, bytes(t.bytes_per_s) + "/s"),
      el("td", { class: "num items", "data-value": t.items }, t.items),
      el("td", { class: "num size", "data-value": t.size_bytes }, bytes(t.size_bytes)),
      el("td", { class: "retention" }, retention(t)),
      el("td", { class: "lag" }, lag || el("span", { class: "none" }, "—")));
  });
  document.querySelector("#topics tbody").replaceChildren(...rows);
  const notes = [];
  if (!f.topics.length) notes.push("no topics yet");
  if (f.topics_left_out) notes.push(`${f.topics_left_out} more topics not shown`);
  notes.push(f.groups_watched.length
    ? "lag of groups " + f.groups_watched.join(", ")
    : "no consumer groups watched (name them with --dashboard-group; the node cannot list them)");
  fill("topics-note", notes.join(" · "));
}

function stateClass(s) {
  if (s === "running") return "ok";
  if (s.startsWith("failed") || s.startsWith("losing")) return "bad";
  return "warn";
}

function renderComponents(id, list, f) {
  if (!list.length) {
    fill(id, el("div", { class: "none" },
      f.services.sources ? "none reported" : "none reported (no metric events read)"));
    return;
  }
  fill(id, list.map(c => el("div", { class: "component" },
    el("div", {}, el("span", { class: "state " + stateClass(c.state) }, c.state), " ",
       c.kind, " ", c.id, el("span", { class: "note" }, ` · ${c.source} · ${c.age_s.toFixed(0)} s ago`)),
    c.summary ? el("div", { class: "summary" }, c.summary) : null,
    el("details", {}, el("summary", {}, "all figures"),
      el("div", { class: "fields" },
        Object.entries(c.fields)
          .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(2)}`).join("  "))))));
}

// What each tailed role reads, for "none reported" to say where it looked.
const TAIL_SOURCES = {
  "predictions": "diaspora.predictions",
  "pool events": "pool.NAME.events",
  "loop": "models, edge.models",
  "invalidations": "prov.invalidations",
};

function renderTail(id, tails, role) {
  const ts = tails.filter(t => t.role === role);
  const entries = ts.flatMap(t => t.tail.entries);
  entries.sort((a, b) => b.t_us - a.t_us);
  if (!entries.length) {
    fill(id, el("div", { class: "none" },
      ts.length ? `none reported yet on ${ts.map(t => t.topic).join(", ")}`
                : `none reported (no topic ${TAIL_SOURCES[role]} on this node)`));
    return;
  }
  fill(id, entries.slice(0, 40).map(e => el("div", {},
    el("span", { class: "note" }, time(e.t_us) + " "),
    e.kind ? el("span", { class: "kind " + e.kind }, e.kind) : null,
    e.text, " ", el("span", { class: "note" }, e.item))));
}

function renderLoop(st) {
  if (!st) {
    fill("loop-status");
    return;
  }
  const parts = [
    el("div", { id: "loop-phase" }, el("strong", {}, "phase: "), st.phase),
    st.summary ? el("div", { class: "summary" }, st.summary) : null,
  ];
  if (st.image) {
    const img = st.image;
    const canvas = el("canvas", { id: "loop-image", width: img.width, height: img.height });
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(img.width, img.height);
    for (let i = 0; i < img.gray.length; i++) {
      data.data[4 * i] = data.data[4 * i + 1] = data.data[4 * i + 2] = img.gray[i];
      data.data[4 * i + 3] = 255;
    }
    ctx.putImageData(data, 0, 0);
    parts.push(el("figure", {}, canvas, el("figcaption", { class: "note" }, img.label)));
  } else {
    parts.push(el("div", { class: "none" }, "no reconstruction yet"));
  }
  parts.push(el("div", { class: "tail", id: "loop-events" }, st.events.map(e => el("div", {},
    el("span", { class: "note" }, time(e.t_us) + " "),
    el("span", { class: "kind " + e.kind }, e.kind), e.text))));
  fill("loop-status", parts);
}

let frames = 0;
function render(f) {
  frames++;
  renderNode(f);
  renderTopics(f);
  renderComponents("bridges", f.services.bridges, f);
  renderComponents("streams", f.services.streams, f);
  renderComponents("pools", f.services.pools, f);
  renderComponents("views", f.services.views, f);
  renderTail("predictions", f.tails, "predictions");
  renderTail("pool-events", f.tails, "pool events");
  renderLoop(f.loop_status);
  renderTail("loop", f.tails, "loop");
  renderTail("notices", f.tails, "invalidations");
  fill("metrics-state", "metrics: " + f.metrics_state + " · updated " + time(f.t_us));
  document.body.dataset.frames = frames;
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/events");
  source.addEventListener("frame", ev => {
    conn.textContent = "live";
    conn.className = "pill live";
    try { render(JSON.parse(ev.data)); } catch (e) { console.error(e); }
  });
  source.onerror = () => {
    conn.textContent = "reconnecting";
    conn.className = "pill down";
  };
}

// ---- lineage explorer ----

function recordLine(n) {
  return el("div", { "data-record": n.id, style: `padding-left:${n.depth * 1.2}em` },
    el("a", { href: "#", onclick: ev => { ev.preventDefault(); explore(String(n.id)); } }, "#" + n.id),
    ` ${n.kind} `, n.item || n.name || "",
    n.invalid ? el("span", { class: "invalid" }, "  INVALID") : null);
}

function whyText(w) {
  const chain = w.chain.map(s => `#${s.record} ${s.kind} ${s.name}`).join(" ← ");
  return `invalid: ${w.event.cause} (event ${w.event.id}): ${chain}`;
}

async function explore(q) {
  const box = document.getElementById("lineage-q");
  box.value = q;
  const depth = document.getElementById("lineage-depth").value || 6;
  const out = document.getElementById("lineage-result");
  out.replaceChildren(el("div", { class: "note full" }, "asking the provenance store…"));
  let body;
  try {
    const r = await fetch(`/api/lineage?q=${encodeURIComponent(q)}&depth=${depth}`);
    body = await r.json();
  } catch (e) {
    body = { error: String(e) };
  }
  if (body.error) {
    out.replaceChildren(el("div", { class: "error full", id: "lineage-error" }, body.error));
    return;
  }
  const r = body.record;
  const head = el("div", { class: "full", id: "lineage-record" },
    el("strong", {}, `#${r.id} ${r.kind} `), body.item || r.name || "",
    r.version !== null && r.version !== undefined ? ` version ${r.version}` : "",
    body.matches_total > 1 ? el("span", { class: "note" }, ` (first of ${body.matches_total} matches)`) : "",
    el("div", { class: "fields" },
      Object.entries(r.tags || {}).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("  ")));
  const why = body.why
    ? el("div", { class: "full", id: "why-chain" }, whyText(body.why))
    : el("div", { class: "full note", id: "why-chain" }, "valid: no invalidation reaches it");
  const side = (title, l) => el("div", { class: "tree" }, el("h3", {}, title),
    l.nodes.map(recordLine), l.truncated ? el("div", { class: "note" }, "… truncated") : null);
  out.replaceChildren(head, why,
    side("Up: what it came from", body.up), side("Down: what was derived from it", body.down));
}

document.getElementById("lineage-form").addEventListener("submit", ev => {
  ev.preventDefault();
  explore(document.getElementById("lineage-q").value.trim());
});

connect();
