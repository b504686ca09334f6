// SleepSafe fleet dashboard: polls the sink's API with the user's bearer token and redraws.
"use strict";
const REFRESH_MS = 1000 * Number(document.body.dataset.refreshS || 5);
const COLORS = {
  sleep: "#7b1fa2", microsleep: "#c62828", drowsy: "#ef6c00", distracted: "#f9a825",
  no_face: "#546e7a", camera_lost: "#37474f", yawn: "#00897b", nod: "#1565c0", blink: "#90a4ae",
};
const LAYOUT = { margin: { l: 50, r: 10, t: 10, b: 40 }, barmode: "stack", showlegend: true,
  legend: { orientation: "h" }, paper_bgcolor: "#fff", plot_bgcolor: "#fff" };
const CONFIG = { displayModeBar: false, responsive: true };

function token() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) { sessionStorage.setItem("sleepsafe-token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname + location.search); }
  return sessionStorage.getItem("sleepsafe-token");
}

async function api(path) {
  const r = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (r.status === 401) { document.getElementById("login").hidden = false; throw new Error("token refused: enter an API token"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

function cell(tr, text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; tr.appendChild(td); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

function drawFleet(d) {
  const ids = d.devices.map(x => x.device_id);
  Plotly.react("chart-fleet", [{
    type: "bar", x: ids, y: ids.map(i => d.alerts_per_device[i] || 0), name: "alerts",
    marker: { color: d.devices.map(x => x.online ? "#2e7d32" : "#9e9e9e") },
  }], { ...LAYOUT, showlegend: false }, CONFIG);
}

function drawRate(d) {
  const types = [...new Set(d.alerts_per_hour.map(x => x.type))];
  const traces = types.map(t => {
    const rows = d.alerts_per_hour.filter(x => x.type === t);
    return { type: "bar", name: t, x: rows.map(x => x.hour), y: rows.map(x => x.count), marker: { color: COLORS[t] } };
  });
  Plotly.react("chart-rate", traces, { ...LAYOUT, xaxis: { type: "date" } }, CONFIG);
}

function drawPerclos(d) {
  const h = d.perclos_histogram;
  const mids = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
  Plotly.react("chart-perclos", [{ type: "bar", x: mids, y: h.counts, width: 0.045, marker: { color: "#1565c0" }, name: "telemetry samples" }],
    { ...LAYOUT, showlegend: false, xaxis: { title: { text: "PERCLOS" }, range: [0, 1] }, yaxis: { title: { text: "samples" } } }, CONFIG);
}

async function drawTimeline(device, hours) {
  if (!device) { Plotly.react("chart-timeline", [], LAYOUT, CONFIG); return 0; }
  const t = await api("/dashboard/timeline?device=" + encodeURIComponent(device) + "&hours=" + hours);
  const now = new Date().toISOString();
  const types = [...new Set(t.segments.map(s => s.type))];
  const traces = types.map(ty => {
    const segs = t.segments.filter(s => s.type === ty);
    return {
      type: "bar", orientation: "h", name: ty, y: segs.map(() => ty), base: segs.map(s => s.start),
      x: segs.map(s => Math.max(1000, new Date(s.end || now) - new Date(s.start))),
      marker: { color: COLORS[ty] }, yaxis: "y",
    };
  });
  // The driver state each telemetry sample reported (AWAKE, DROWSY, ...): a band of markers.
  const STATE_COLORS = { AWAKE: "#2e7d32", DROWSY: "#ef6c00", MICROSLEEP: "#c62828", SLEEP: "#7b1fa2",
    DISTRACTED: "#f9a825", NO_FACE: "#546e7a", CAMERA_LOST: "#37474f" };
  traces.push({ type: "scatter", mode: "markers", name: "state", x: t.telemetry.map(r => r.time),
    y: t.telemetry.map(() => "state"), text: t.telemetry.map(r => r.state), hoverinfo: "x+text",
    marker: { symbol: "square", size: 9, color: t.telemetry.map(r => STATE_COLORS[r.state] || "#999") } });
  traces.push({ type: "scatter", mode: "lines", name: "PERCLOS", x: t.telemetry.map(r => r.time),
    y: t.telemetry.map(r => r.perclos), yaxis: "y2", line: { color: "#1565c0" } });
  Plotly.react("chart-timeline", traces, {
    ...LAYOUT, margin: { ...LAYOUT.margin, l: 90 }, barmode: "overlay", xaxis: { type: "date" },
    yaxis: { domain: [0.45, 1], type: "category" }, yaxis2: { domain: [0, 0.35], range: [0, 1], title: { text: "PERCLOS" } },
  }, CONFIG);
  return t.segments.length + t.telemetry.length;
}

function fillTables(d) {
  const dev = document.querySelector("#devices tbody");
  dev.replaceChildren();
  for (const x of d.devices) {
    const tr = document.createElement("tr");
    cell(tr, x.device_id); cell(tr, x.status || "unknown", x.status || "");
    cell(tr, when(x.last_seen)); cell(tr, x.fps == null ? "–" : x.fps.toFixed(1));
    cell(tr, x.spool_depth == null ? "–" : x.spool_depth);
    cell(tr, Object.entries(x.model_versions || {}).map(([k, v]) => k + " " + v).join(", ") || "EAR only");
    dev.appendChild(tr);
  }
  const al = document.querySelector("#alerts tbody");
  al.replaceChildren();
  for (const e of d.recent_alerts) {
    const tr = document.createElement("tr");
    const link = document.createElement("td"), a = document.createElement("a");
    a.href = "/ui/event/" + encodeURIComponent(e.event_id); a.textContent = when(e.start_time);
    link.appendChild(a); tr.appendChild(link);
    cell(tr, e.device_id); cell(tr, e.type); cell(tr, e.severity);
    cell(tr, e.perclos == null ? "–" : (100 * e.perclos).toFixed(0) + " %");
    al.appendChild(tr);
  }
  const sel = document.getElementById("device");
  const keep = sel.value;
  sel.replaceChildren(...d.devices.map(x => new Option(x.device_id, x.device_id)));
  const busiest = d.devices.map(x => x.device_id).sort((a, b) => (d.alerts_per_device[b] || 0) - (d.alerts_per_device[a] || 0))[0];
  sel.value = keep && d.devices.some(x => x.device_id === keep) ? keep : (busiest || "");
}

async function fillJobs() {
  const jobs = await api("/jobs?limit=10");
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren();
  for (const j of jobs) {
    const tr = document.createElement("tr");
    tr.dataset.state = j.state;
    cell(tr, when(j.created_at)); cell(tr, j.model); cell(tr, j.state, j.state);
    const td = document.createElement("td"), bar = document.createElement("progress");
    // GET /jobs has no progress: the bar of a running job asks the job itself.
    bar.max = 1; bar.value = j.state === "succeeded" ? 1 : 0;
    td.appendChild(bar); tr.appendChild(td);
    const r = j.result;
    cell(tr, r ? r.model + "/" + r.version + " · " + r.gate.summary + " · BA " + r.metrics.balanced_accuracy : (j.error || "–"));
    body.appendChild(tr);
    if (j.state === "running") {
      api("/jobs/" + j.id).then(full => {
        if (full.progress) { bar.value = full.progress.fraction; bar.title = full.progress.stage + " " + full.progress.done + "/" + full.progress.total; }
      }).catch(() => {});
    }
  }
  return jobs.length;
}

async function fillModels() {
  const note = document.getElementById("models-error");
  const body = document.querySelector("#models tbody");
  let models;
  try { models = await api("/models"); } catch (e) { note.textContent = String(e.message || e); note.hidden = false; return 0; }
  note.hidden = true;
  body.replaceChildren();
  let rows = 0;
  for (const m of models) {
    for (const v of m.versions.slice(0, 5)) {
      const tr = document.createElement("tr");
      cell(tr, m.name); cell(tr, v.version);
      cell(tr, v.aliases.map(a => "@" + a).join(" ") || "–");
      const ba = v.metrics["gate.balanced_accuracy"];
      cell(tr, ba == null ? "–" : ba.toFixed(3));
      cell(tr, v.gate ? v.gate.summary : (v.tags.source || "–"), v.gate ? (v.gate.passed ? "passed" : "refused") : "");
      body.appendChild(tr); rows++;
    }
  }
  return rows;
}

// One refresh at a time: a slow answer (MLflow behind /models) must not pile up requests,
// which would also spend the token's rate limit.
let refreshing = null;
function refresh() {
  if (!refreshing) refreshing = refreshOnce().finally(() => { refreshing = null; });
  return refreshing;
}

async function refreshOnce() {
  const err = document.getElementById("error");
  try {
    const hours = new URLSearchParams(location.search).get("hours") || 24;
    const d = await api("/dashboard?hours=" + hours);
    document.getElementById("n-devices").textContent = d.devices.length;
    document.getElementById("n-online").textContent = d.devices.filter(x => x.online).length;
    document.getElementById("n-alerts").textContent = Object.values(d.alerts_per_device).reduce((a, b) => a + b, 0);
    document.getElementById("n-dead").textContent = d.statistics.rows.dead_letters;
    drawFleet(d); drawRate(d); drawPerclos(d); fillTables(d);
    const points = await drawTimeline(document.getElementById("device").value, hours);
    document.body.dataset.jobs = await fillJobs();
    document.body.dataset.models = await fillModels();
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.timelinePoints = points;
    document.body.dataset.refreshes = Number(document.body.dataset.refreshes) + 1;
    err.hidden = true;
  } catch (e) {
    err.textContent = String(e.message || e); err.hidden = false;
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  sessionStorage.setItem("sleepsafe-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});
document.getElementById("device").addEventListener("change", refresh);
if (token()) refresh(); else document.getElementById("login").hidden = false;
(function tick() {
  setTimeout(() => { (token() ? refresh() : Promise.resolve()).finally(tick); }, REFRESH_MS);
})();
