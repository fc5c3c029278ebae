// tuneloop dashboard: live curves, jobs, A/B route weights and the playground. No libraries, no network
// beyond this server: the page talks to the same OpenAI-compatible API as any client (the session cookie
// stands for the key).
"use strict";

const COLOURS = ["#2f5bd3", "#e8772e", "#17803d", "#b42318", "#7a5af8", "#0e9384"];
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function tidy(v) {
  if (!isFinite(v)) return "";
  const a = Math.abs(v);
  if (Number.isInteger(v)) return String(v);
  return a >= 100 ? v.toFixed(0) : a >= 1 ? String(Number(v.toFixed(1))) : a >= 0.01 ? v.toFixed(3) : v.toExponential(1);
}

// One panel: lines (and optional bars) over a shared x axis. series: [{name, points: [[x, y]], bars}]
function panel(title, series, xLabel, xFormat = tidy) {
  const W = 900, H = 230, L = 56, R = 16, T = 24, B = 34;
  const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title});
  const all = series.flatMap(s => s.points).filter(p => isFinite(p[1]));
  svg.appendChild(el("text", {x: L, y: 15, "font-weight": "600"}, title));
  if (!all.length) { svg.appendChild(el("text", {x: L, y: H / 2}, "no points yet")); return svg; }
  let [x0, x1] = [Math.min(...all.map(p => p[0])), Math.max(...all.map(p => p[0]))];
  let [y0, y1] = [Math.min(...all.map(p => p[1])), Math.max(...all.map(p => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  const bars = series.find(s => s.bars);
  if (bars) {  // half a bucket of room at each end, so the first and last bars stay inside the axes
    y0 = Math.min(0, y0);
    const half = (x1 - x0) / Math.max(bars.points.length - 1, 1) / 2;
    [x0, x1] = [x0 - half, x1 + half];
  }
  if (y1 === y0) { y1 += Math.abs(y1) * 0.1 || 1; y0 -= Math.abs(y0) * 0.1 || 0; }
  const X = x => L + (x - x0) / (x1 - x0) * (W - L - R), Y = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}));
  svg.appendChild(el("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    svg.appendChild(el("text", {x: L - 6, y: Y(y) + 4, "text-anchor": "end"}, tidy(y)));
    const x = x0 + (x1 - x0) * i / 4;
    svg.appendChild(el("text", {x: X(x), y: H - B + 15, "text-anchor": "middle"}, xFormat(x)));
  }
  svg.appendChild(el("text", {x: W - R, y: H - 4, "text-anchor": "end"}, xLabel));
  series.forEach((s, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const pts = s.points.filter(p => isFinite(p[1]));
    if (s.bars) {
      const width = Math.max(1, (W - L - R) / Math.max(pts.length, 1) * 0.7);
      pts.forEach(p => svg.appendChild(el("rect", {x: X(p[0]) - width / 2, y: Y(p[1]), width, height: Math.max(0, H - B - Y(p[1])), fill: colour, opacity: 0.55})));
    } else {
      svg.appendChild(el("polyline", {points: pts.map(p => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" "), fill: "none", stroke: colour, "stroke-width": 2}));
      if (pts.length < 40) pts.forEach(p => svg.appendChild(el("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: colour})));
    }
    const last = pts[pts.length - 1];
    svg.appendChild(el("text", {x: W - R - 170 + 0, y: T + 14 * i, fill: colour}, `${s.name}${last ? " " + tidy(last[1]) : ""}`));
  });
  return svg;
}

// --- the training curve of a run, followed while it trains ------------------------------------
function followTraining(box) {
  const records = [];
  let next = 0;
  const status = box.querySelector(".chart-status");
  const groups = [["loss", ["train_loss", "val_loss", "loss"]], ["reward", ["reward", "val_reward"]]];
  async function poll() {
    let body;
    try {
      const response = await fetch(`${box.dataset.metrics}&after=${next}`);
      if (!response.ok) { status.textContent = `could not read the metrics (${response.status})`; return; }
      body = await response.json();
    } catch (err) { status.textContent = "the server did not answer; retrying"; setTimeout(poll, 5000); return; }
    records.push(...body.records);
    next = body.next;
    box.querySelectorAll("svg").forEach(s => s.remove());
    for (const [title, keys] of groups) {
      const series = keys.filter(k => records.some(r => typeof r[k] === "number"))
        .map(k => ({name: k, points: records.filter(r => typeof r[k] === "number").map(r => [r.step, r[k]])}));
      if (series.length) box.appendChild(panel(title, series, "step"));
    }
    const step = records.length ? records[records.length - 1].step : 0;
    status.textContent = body.running ? `training: step ${step} so far (updates every 2 s)` : `finished: ${step} steps`;
    box.dataset.step = step;
    if (body.running) setTimeout(poll, 2000);
  }
  poll();
}

function trafficChart(box) {
  const series = JSON.parse(document.getElementById(box.dataset.series).textContent);
  const x = series.map(p => Date.parse(p.start) / 1000);
  const clock = t => new Date(t * 1000).toISOString().slice(5, 16).replace("T", " ");
  box.appendChild(panel("requests per bucket", [{name: "requests", bars: true, points: series.map((p, i) => [x[i], p.requests])}], "time (UTC)", clock));
  box.appendChild(panel("latency (ms)", ["p50_latency_ms", "p95_latency_ms"].map(k => ({name: k, points: series.map((p, i) => [x[i], p[k] ?? NaN])})), "time (UTC)", clock));
}

// --- fine-tuning jobs -------------------------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function newJob(form) {
  const status = form.querySelector(".job-status");
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const data = new FormData(form);
    const upload = new FormData();
    upload.append("file", data.get("file"));
    upload.append("purpose", "fine-tune");
    try {
      status.textContent = "uploading and checking the file…";
      const file = await api("/v1/files", {method: "POST", body: upload});
      if (file.status === "error") { status.textContent = `the file has problems: ${file.status_details}`; return; }
      const method = data.get("method");
      const hyperparameters = {n_epochs: Number(data.get("n_epochs") || 1)};
      const body = {model: data.get("model"), training_file: file.id, method: {type: method, [method]: {hyperparameters}}};
      if (data.get("suffix")) body.suffix = data.get("suffix");
      const job = await api("/v1/fine_tuning/jobs", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
      location.href = `/ui/jobs/${encodeURIComponent(job.id)}`;
    } catch (err) { status.textContent = `not started: ${err.message}`; }
  });
}

function followJob(box) {
  const id = box.dataset.job, list = document.getElementById("events"), state = document.getElementById("job-status");
  const cancel = document.getElementById("cancel-job");
  const final = ["succeeded", "failed", "cancelled"];
  const seen = new Set();
  async function poll() {
    try {
      const [job, events] = await Promise.all([api(`/v1/fine_tuning/jobs/${id}`), api(`/v1/fine_tuning/jobs/${id}/events?limit=200`)]);
      state.textContent = job.status;
      state.className = `status ${job.status}`;
      document.getElementById("job-model").textContent = job.fine_tuned_model || "-";
      for (const event of events.data.slice().reverse()) {
        if (seen.has(event.id)) continue;
        seen.add(event.id);
        const item = document.createElement("li");
        item.className = event.level;
        item.textContent = `${new Date(event.created_at * 1000).toISOString().slice(11, 19)}  ${event.message}`;
        list.prepend(item);
      }
      if (cancel) cancel.disabled = final.includes(job.status);
      if (!final.includes(job.status)) setTimeout(poll, 2000);
    } catch (err) { setTimeout(poll, 5000); }
  }
  if (cancel) cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try { await api(`/v1/fine_tuning/jobs/${id}/cancel`, {method: "POST"}); } catch (err) { alert(err.message); }
  });
  poll();
}

// --- A/B route weights ------------------------------------------------------------------------
function editRoute(form) {
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const models = [...form.querySelectorAll("input[name=model]")].map(i => i.value);
    const weights = [...form.querySelectorAll("input[name=weight]")].map(i => Number(i.value));
    const status = form.querySelector(".route-status");
    try {
      await api(`/admin/routes/${encodeURIComponent(form.dataset.route)}`, {method: "PUT", headers: {"content-type": "application/json"},
        body: JSON.stringify({variants: models.map((model, i) => ({model, weight: weights[i]}))})});
      status.textContent = "saved; new requests follow these weights";
    } catch (err) { status.textContent = `not saved: ${err.message}`; }
  });
}

// --- the playground ---------------------------------------------------------------------------
function playground(form) {
  form.addEventListener("submit", async event => {
    event.preventDefault();
    const data = new FormData(form);
    const messages = [];
    if (data.get("system")) messages.push({role: "system", content: data.get("system")});
    messages.push({role: "user", content: data.get("message")});
    await Promise.all(["a", "b"].map(async side => {
      const model = data.get(`model_${side}`), answer = document.getElementById(`answer-${side}`), meta = document.getElementById(`meta-${side}`);
      if (!model) { answer.textContent = ""; meta.textContent = ""; return; }
      answer.textContent = "…";
      const started = performance.now();
      try {
        const body = await api("/v1/chat/completions", {method: "POST", headers: {"content-type": "application/json"},
          body: JSON.stringify({model, messages, max_tokens: Number(data.get("max_tokens") || 96), temperature: 0})});
        answer.textContent = body.choices[0].message.content;
        meta.textContent = `${body.model} · ${body.usage.completion_tokens} tokens · ${((performance.now() - started) / 1000).toFixed(1)} s`;
      } catch (err) { answer.textContent = `error: ${err.message}`; meta.textContent = ""; }
    }));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".chart[data-metrics]").forEach(followTraining);
  document.querySelectorAll(".chart[data-series]").forEach(trafficChart);
  document.querySelectorAll("#new-job").forEach(newJob);
  document.querySelectorAll("#job[data-job]").forEach(followJob);
  document.querySelectorAll("form.route").forEach(editRoute);
  document.querySelectorAll("#playground").forEach(playground);
});
