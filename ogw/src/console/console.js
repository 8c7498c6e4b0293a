// Strata's console: polls /console/api/overview and /console/api/series and draws
// them. No dependencies; the plots are drawn on canvases by `plot` below.
"use strict";

const OVERVIEW_EVERY_MS = 5000;

function bytes(b) {
  if (b == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = b, u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return u === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[u]}`;
}
const num = (v, d = 1) => (v == null ? "–" : Number(v).toFixed(d).replace(/\.0+$/, ""));
const ms = (s) => (s == null ? "–" : `${(s * 1000).toFixed(s < 0.01 ? 2 : 1)} ms`);

function cell(text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.append(text); else td.textContent = text;
  if (cls) td.className = cls;
  return td;
}
function fill(tableId, rows) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells.map((c) => (c instanceof Node && c.tagName === "TD" ? c : cell(c))));
    return tr;
  }));
}
function usedBar(used, cap) {
  const wrap = document.createElement("span");
  const bar = document.createElement("span");
  bar.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = `${cap > 0 ? Math.min(100, (100 * used) / cap) : 0}%`;
  bar.append(inner);
  wrap.append(bar, `${bytes(used)} (${cap > 0 ? Math.round((100 * used) / cap) : 0} %)`);
  return wrap;
}
function pairs(dlId, list) {
  const dl = document.getElementById(dlId);
  dl.replaceChildren(...list.flatMap(([k, v]) => {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    return [dt, dd];
  }));
}

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) { location.href = "/console/login"; throw new Error("logged out"); }
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function showOverview(o) {
  const health = document.getElementById("health");
  const status = o.report ? o.report.health.status : "error";
  health.textContent = status.toUpperCase();
  health.className = `badge ${status}`;
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.getElementById("error").textContent = o.error || "";
  const reasons = o.report ? o.report.health.reasons : [];
  document.getElementById("reasons").replaceChildren(...reasons.map((r) => {
    const li = document.createElement("li"); li.textContent = r; return li;
  }));
  const r = o.report || { metanodes: [], datanodes: [], extents: [] };
  fill("metanodes", r.metanodes.map((m) => [m.id ?? "?", m.addr, m.role, m.term ?? "–",
    m.last_log_index ?? "–", m.last_applied ?? "–"]));
  fill("datanodes", r.datanodes.map((d) => [d.id, d.addr, d.zone || "–", d.state,
    usedBar(d.capacity_bytes - d.free_bytes, d.capacity_bytes), bytes(d.free_bytes), bytes(d.capacity_bytes)]));
  fill("extents", r.extents.map((e) => [e.policy, e.open, e.sealed, bytes(e.sealed_bytes)]));
  const work = [];
  if (r.repair) {
    const p = r.repair;
    const degraded = p.degraded.reduce((a, d) => a + d.extents, 0);
    work.push(["degraded extents", `${degraded}${p.unreadable ? `, ${p.unreadable} unreadable` : ""}`]);
    work.push(["repair", `${p.waiting} copies waiting, ${p.in_flight} in flight, ${bytes(p.remaining_bytes)} to write`]);
    for (const [n, c] of p.draining) work.push([`drain of datanode ${n}`, `${c} copies left`]);
    work.push(["rebalance", `spread ${(p.rebalance_spread * 100).toFixed(1)} %, ${bytes(p.rebalance_planned_bytes)} planned${p.rebalance_paused ? " (paused)" : ""}`]);
  }
  if (o.gc) {
    const age = o.gc.last_pass_ms ? `${Math.max(0, Math.round((Date.now() - o.gc.last_pass_ms) / 1000))} s ago` : "no pass yet";
    work.push(["GC", `last pass ${age} by ${o.gc.holder || "?"}; ${o.gc.passes} passes`]);
    work.push(["GC reclaimed", `${bytes(o.gc.bytes_reclaimed_total)} in ${o.gc.extents_deleted_total} extents`]);
  } else {
    work.push(["GC", "no pass recorded yet"]);
  }
  pairs("work", work);
  const s = o.s3;
  pairs("s3", s ? [
    ["requests", `${num(s.requests_per_second)}/s (${num(s.errors_per_second)} 5xx/s)`],
    ["in", `${bytes(s.received_bytes_per_second)}/s`], ["out", `${bytes(s.sent_bytes_per_second)}/s`],
    ["latency", `p50 ${ms(s.latency_p50_seconds)}, p99 ${ms(s.latency_p99_seconds)}`],
    ["in flight", num(s.in_flight, 0)],
  ] : [["requests", "no sample yet"]]);
  fill("buckets", o.buckets.map((b) => [b.tenant, b.bucket, cell(String(b.objects), "num"), cell(bytes(b.bytes), "num"),
    cell(String(b.noncurrent_versions), "num"), cell(bytes(b.noncurrent_bytes), "num")]));
}

// A line plot of `series` ([{values: [[t_ms, v|null]...]}]) on `canvas`, the y axis
// labelled with `label(v)`. Leaves what it drew in data-points and data-max, so that
// what is on screen can be checked.
function plot(canvas, series, label, fromMs, toMs) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 78, R = 10, T = 10, B = 24;
  ctx.clearRect(0, 0, W, H);
  ctx.font = "11px system-ui, sans-serif";
  const all = series.flatMap((s) => s.values.filter(([, v]) => v != null).map(([, v]) => v));
  const max = all.length ? Math.max(...all) : 0;
  const top = max > 0 ? max * 1.1 : 1;
  const x = (t) => L + ((t - fromMs) / Math.max(1, toMs - fromMs)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  ctx.strokeStyle = "#d9dee6"; ctx.fillStyle = "#6b7686"; ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4, yy = Math.round(y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(L, yy); ctx.lineTo(W - R, yy); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle"; ctx.fillText(label(v), L - 6, yy);
  }
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  for (let i = 0; i <= 4; i++) {
    const t = fromMs + ((toMs - fromMs) * i) / 4;
    ctx.fillText(new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }), x(t), H - B + 6);
  }
  const colors = ["#1a73e8", "#d93025"];
  series.forEach((s, i) => {
    ctx.strokeStyle = colors[i % colors.length]; ctx.lineWidth = 2; ctx.beginPath();
    let pen = false;
    for (const [t, v] of s.values) {
      if (v == null) { pen = false; continue; }
      if (pen) ctx.lineTo(x(t), y(v)); else ctx.moveTo(x(t), y(v));
      pen = true;
    }
    ctx.stroke();
    // Points on their own (the first minutes, or between gaps) as dots.
    ctx.fillStyle = ctx.strokeStyle;
    s.values.forEach(([t, v], j) => {
      const alone = (k) => k < 0 || k >= s.values.length || s.values[k][1] == null;
      if (v != null && alone(j - 1) && alone(j + 1)) {
        ctx.beginPath(); ctx.arc(x(t), y(v), 2.5, 0, 2 * Math.PI); ctx.fill();
      }
    });
  });
  canvas.dataset.points = String(all.length);
  canvas.dataset.max = String(max);
}

function showSeries(s) {
  const pts = s.points;
  const to = pts.length ? pts[pts.length - 1].t_ms : Date.now();
  // The last hour kept, or at least five minutes, ending at the last point.
  const from = Math.min(pts.length ? pts[0].t_ms : to, to - 5 * 60 * 1000);
  const line = (f) => ({ values: pts.map((p) => [p.t_ms, f(p)]) });
  plot(document.getElementById("plot-capacity"), [line((p) => p.used_bytes)], bytes, from, to);
  plot(document.getElementById("plot-requests"),
    [line((p) => p.requests_per_second), line((p) => p.errors_per_second)], (v) => `${num(v)}/s`, from, to);
  plot(document.getElementById("plot-throughput"),
    [line((p) => p.received_bytes_per_second), line((p) => p.sent_bytes_per_second)], (v) => `${bytes(v)}/s`, from, to);
  plot(document.getElementById("plot-latency"),
    [line((p) => p.latency_p50_seconds), line((p) => p.latency_p99_seconds)], ms, from, to);
}

async function refreshOverview() {
  try { showOverview(await getJson("/console/api/overview")); }
  catch (e) { document.getElementById("error").textContent = String(e); }
}
async function refreshSeries() {
  try { showSeries(await getJson("/console/api/series")); }
  catch (e) { document.getElementById("error").textContent = String(e); }
}

// Each poll is scheduled when the last one has answered: a slow gateway gets fewer
// requests, never a pile of them.
function every(ms, f) {
  const again = async () => { await f(); setTimeout(again, ms); };
  again();
}

async function start() {
  let period = 2;
  try { period = (await getJson("/console/api/series")).sample_period_seconds; } catch (e) { /* keep 2 s */ }
  every(OVERVIEW_EVERY_MS, refreshOverview);
  every(Math.max(1000, period * 1000), refreshSeries);
}
start();
