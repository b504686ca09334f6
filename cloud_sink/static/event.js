// One event: its feature window plotted, its records, its labels and the three label buttons.
"use strict";
const EVENT_ID = document.body.dataset.eventId;
const CONFIG = { displayModeBar: false, responsive: true };

function token() { return sessionStorage.getItem("sleepsafe-token"); }

async function api(path, body) {
  const opts = { headers: { Authorization: "Bearer " + token() } };
  if (body) { opts.method = "POST"; opts.headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(body); }
  const r = await fetch(path, opts);
  if (!r.ok) {
    let why = "HTTP " + r.status;
    try { const d = await r.json(); why += ": " + (typeof d.detail === "string" ? d.detail : JSON.stringify(d.detail)); } catch (_) {}
    throw new Error(path + ": " + why);
  }
  return r.json();
}

function cell(tr, text) { const td = document.createElement("td"); td.textContent = text == null ? "–" : text; tr.appendChild(td); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

// The window's columns, back to absolute stream seconds (t_ms is delta-coded).
function seconds(w) { let t = 0; return w.t_ms.map(d => (t += d) / 1000); }

function drawWindow(rec) {
  const w = rec.window || {};
  if (!w.t_ms || !w.t_ms.length) { Plotly.react("chart-window", [], {}, CONFIG); return 0; }
  const t = seconds(w), t0 = t[t.length - 1];
  const x = t.map(v => +(v - t0).toFixed(3));
  const traces = [
    { name: "openness", y: w.openness, line: { color: "#1565c0" } },
    { name: "iris visibility", y: w.iris_vis, line: { color: "#2e7d32" } },
    { name: "pitch (°)", y: w.pitch, yaxis: "y2", line: { color: "#8d6e63", dash: "dot" } },
  ];
  if (w.eye_closed) traces.push({ name: "model P(closed)", y: w.eye_closed, line: { color: "#c62828" } });
  if (w.temporal_closed) traces.push({ name: "GRU P(closed)", y: w.temporal_closed, line: { color: "#7b1fa2" } });
  for (const tr of traces) { tr.type = "scatter"; tr.mode = "lines+markers"; tr.x = x; tr.marker = { size: 4 }; }
  Plotly.react("chart-window", traces, {
    margin: { l: 50, r: 50, t: 10, b: 40 }, legend: { orientation: "h" },
    xaxis: { title: { text: "seconds before the record" } },
    yaxis: { range: [0, 1.5], title: { text: "ratio / probability" } },
    yaxis2: { overlaying: "y", side: "right", title: { text: "pitch (°)" } },
    shapes: [{ type: "line", x0: x[0], x1: 0, y0: 0.2, y1: 0.2, line: { color: "#999", dash: "dash", width: 1 } }],
  }, CONFIG);
  return x.length;
}

function fill(ev) {
  document.getElementById("summary").textContent =
    ev.type + " · " + ev.severity + " · " + ev.device_id + " · " + when(ev.start_time);
  document.getElementById("label").textContent = ev.label || "none";
  const recs = document.querySelector("#records tbody");
  recs.replaceChildren();
  for (const r of ev.records) {
    const tr = document.createElement("tr");
    cell(tr, r.phase); cell(tr, r.state); cell(tr, when(r.raised_time || r.start_time));
    cell(tr, r.duration_ms == null ? null : (r.duration_ms / 1000).toFixed(1) + " s");
    cell(tr, r.perclos == null ? null : (100 * r.perclos).toFixed(0) + " %");
    recs.appendChild(tr);
  }
  const labs = document.querySelector("#labels tbody");
  labs.replaceChildren();
  for (const l of [...ev.labels].reverse()) {
    const tr = document.createElement("tr");
    cell(tr, when(l.time)); cell(tr, l.labeller); cell(tr, l.label); cell(tr, l.previous); cell(tr, l.note || "");
    labs.appendChild(tr);
  }
  // The opening record (raised or instant) holds the frames before the alert.
  const first = ev.records.find(r => r.phase !== "ended") || ev.records[0];
  document.body.dataset.points = drawWindow(first);
  const ack = ev.records.find(r => r.acknowledged_via);
  document.getElementById("ack").textContent = ack
    ? "Acknowledged by the driver (" + ack.acknowledged_via + ", stream clock " + ack.acknowledged_ms + " ms)."
    : "Not acknowledged by the driver.";
  if (first.crops && first.crops.png) {
    // One row per frame of the window, oldest first, both eyes side by side.
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + first.crops.png;
    img.alt = first.crops.frames + " frames of eye crops";
    img.className = "crops";
    document.getElementById("crops").replaceChildren(img);
  }
}

async function load() {
  const err = document.getElementById("error");
  try {
    if (!token()) throw new Error("no API token: open the dashboard first (/ui#token=...)");
    fill(await api("/events/" + encodeURIComponent(EVENT_ID)));
    err.hidden = true;
  } catch (e) { err.textContent = String(e.message || e); err.hidden = false; }
  document.body.dataset.loaded = Number(document.body.dataset.loaded) + 1;
}

for (const b of document.querySelectorAll("button[data-label]")) {
  b.addEventListener("click", async () => {
    const err = document.getElementById("error");
    try {
      await api("/events/" + encodeURIComponent(EVENT_ID) + "/label", {
        label: b.dataset.label, labeller: document.getElementById("labeller").value.trim() || "dashboard",
        note: document.getElementById("note").value,
      });
      await load();
    } catch (e) { err.textContent = String(e.message || e); err.hidden = false; }
  });
}
load();
