// trainlab dashboard: one page per hash route, every number from the JSON API (/api/v1), charts by uPlot.
"use strict";

const $ = (sel, el = document) => el.querySelector(sel);
const main = $("#main");
const COLORS = ["#2f6fde", "#e0662b", "#1f8a4c", "#9b3fc4", "#c8372d", "#0f8fa3", "#8a6d00", "#d14f95"];
let cleanup = [];  // timers, event sources and charts of the page being left

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(v, d = 4) { return v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(d) : esc(v)); }
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
function dur(s) {
  if (s === null || s === undefined) return "–";
  return s < 90 ? s.toFixed(1) + " s" : s < 5400 ? (s / 60).toFixed(1) + " min" : (s / 3600).toFixed(1) + " h";
}
function age(iso) {
  if (!iso) return "–";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 60 ? Math.round(s) + " s ago" : s < 3600 ? Math.round(s / 60) + " min ago" : s < 86400 ? Math.round(s / 3600) + " h ago" : Math.round(s / 86400) + " d ago";
}
function toast(msg) {
  const t = $("#toast");
  t.textContent = msg; t.hidden = false;
  clearTimeout(toast.timer); toast.timer = setTimeout(() => { t.hidden = true; }, 8000);
}

async function api(path, opts = {}) {
  // every request says it comes from this page: the server refuses changes without it (guard.py)
  opts.headers = Object.assign({"X-Trainlab": "1"}, opts.headers || {});
  const res = await fetch("/api/v1" + path, opts);
  const ct = res.headers.get("content-type") || "";
  const body = ct.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const msg = (body && body.error) || `${res.status} ${res.statusText}`;
    throw new Error(msg);
  }
  return body;
}
const post = (path, data) => api(path, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data || {})});

// set an element's text if it is still on the page (an answer can come after the user moved on)
function setText(sel, text) { const el = $(sel); if (el) el.textContent = text; }
function every(ms, fn) { fn(); const id = setInterval(fn, ms); cleanup.push(() => clearInterval(id)); }

// ------------------------------------------------------------------ charts
function makeChart(el, title, labels, opts = {}) {
  const series = [{label: opts.xlabel || "epoch"}];
  labels.forEach((l, i) => series.push({
    label: l.label, stroke: l.color || COLORS[i % COLORS.length], width: l.width ?? 1.5, spanGaps: l.spanGaps ?? true,
    points: {show: !!l.points, size: 7, fill: l.color || COLORS[i % COLORS.length]}, dash: l.dash,
  }));
  // as wide as its box (a phone's 390 px included), and again when the window changes
  const size = () => ({width: Math.max(200, el.clientWidth - 16), height: el.clientWidth < 420 ? 220 : 280});
  const plot = new uPlot({title, ...size(), series, scales: {x: {time: false}},
    axes: [{label: opts.xlabel || "epoch"}, {label: opts.ylabel || ""}], legend: {live: true}},
    [[], ...labels.map(() => [])], el);
  const resized = () => plot.setSize(size());
  window.addEventListener("resize", resized);
  cleanup.push(() => { window.removeEventListener("resize", resized); plot.destroy(); });
  return plot;
}

// ------------------------------------------------------------------ Runs
// The table is a page of the run index, filtered and sorted by the server (/api/v1/runs: fast with
// tens of thousands of runs). It refreshes every 2 s by patching the cells of the rows it shows;
// rows are rebuilt only when the page's runs change, so a click never lands on a replaced row.
function runsPage() {
  const statuses = ["", "running", "completed", "interrupted", "failed", "pruned", "stale", "missing"];
  main.innerHTML = `<h1>Runs</h1>
    <div class="row card filters"><input id="filter" type="search" placeholder="search: id, recipe, tag, note, study" size="28">
    <select id="f-status">${statuses.map(s => `<option value="${s}">${s || "any status"}</option>`).join("")}</select>
    <input id="f-recipe" type="text" placeholder="recipe" size="12"><input id="f-study" type="text" placeholder="study" size="12">
    <input id="f-dataset" type="text" placeholder="dataset" size="10">
    <label class="muted">test acc ≥ <input id="f-min" type="number" min="0" max="1" step="0.01" style="width:5em"></label>
    <button id="compare-btn" disabled>Compare selected</button></div>
    <div class="row"><span class="muted" id="count"></span><button class="secondary" id="prev">‹ newer</button>
      <button class="secondary" id="next">older ›</button></div>
    <div class="scroll"><table id="runs"><thead><tr><th></th>
      <th class="sortable" data-k="run_id">run</th><th class="sortable" data-k="recipe">recipe</th>
      <th class="sortable" data-k="status">status</th><th class="sortable" data-k="study">study</th><th>tags</th>
      <th class="sortable num" data-k="val_acc_at_best">val acc (best epoch)</th><th class="sortable num" data-k="test_acc">test acc</th>
      <th class="sortable num" data-k="seconds">duration</th><th class="sortable num" data-k="peak_rss_mb">peak memory</th>
      <th class="sortable" data-k="started_at">age</th></tr></thead>
    <tbody></tbody></table></div>`;
  const selected = new Set();
  const state = {sort: "started_at", desc: true, offset: 0, limit: 100, total: 0, ids: ""};
  const cells = r => ({
    status: `<span class="status ${esc(r.live_status)}">${esc(r.live_status)}</span>` + (r.live_status === "running"
      ? ` <span class="bar" title="${pct(r.progress)}"><span style="width:${100 * (r.progress || 0)}%"></span></span> ${pct(r.progress)}` : ""),
    study: r.study ? `<a href="#/study/${encodeURIComponent(r.study)}">${esc(r.study)}</a> #${r.trial ?? ""}` : "",
    tags: (r.tags || []).map(esc).join(", "), val: fmt(r.val_acc_at_best), test: fmt(r.test_acc), dur: dur(r.seconds),
    mem: r.peak_rss_mb ? `${Math.round(r.peak_rss_mb)} MB` : "–", age: age(r.started_at)});
  const row = r => {
    const c = cells(r);
    return `<tr data-id="${esc(r.run_id)}"><td><input type="checkbox" class="pick" ${selected.has(r.run_id) ? "checked" : ""}></td>
      <td><a href="#/run/${esc(r.run_id)}">${esc(r.run_id)}</a></td><td>${esc(r.recipe)}</td>
      <td data-c="status">${c.status}</td><td data-c="study">${c.study}</td><td data-c="tags">${c.tags}</td>
      <td class="num" data-c="val">${c.val}</td><td class="num" data-c="test">${c.test}</td><td class="num" data-c="dur">${c.dur}</td>
      <td class="num" data-c="mem">${c.mem}</td><td data-c="age">${c.age}</td></tr>`;
  };
  const query = () => {
    const p = new URLSearchParams({sort: state.sort, desc: state.desc, offset: state.offset, limit: state.limit});
    const add = (k, v) => { if (v) p.set(k, v); };
    add("q", $("#filter").value.trim()); add("status", $("#f-status").value); add("recipe", $("#f-recipe").value.trim());
    add("study", $("#f-study").value.trim()); add("dataset", $("#f-dataset").value.trim()); add("min_test_acc", $("#f-min").value);
    return "/runs?" + p;
  };
  const render = page => {
    state.total = page.total;
    const ids = page.runs.map(r => r.run_id).join("\n");
    const body = $("#runs tbody");
    if (ids !== state.ids) {  // other runs on this page: rebuild it
      body.innerHTML = page.runs.map(row).join("");
      state.ids = ids;
    } else {  // the same runs: only their changing cells
      page.runs.forEach(r => {
        const tr = body.querySelector(`tr[data-id="${CSS.escape(r.run_id)}"]`);
        const c = cells(r);
        for (const [k, v] of Object.entries(c)) { const td = tr && tr.querySelector(`[data-c="${k}"]`); if (td && td.innerHTML !== v) td.innerHTML = v; }
      });
    }
    const last = Math.min(state.offset + page.runs.length, page.total);
    $("#count").textContent = page.total ? `runs ${state.offset + 1}–${last} of ${page.total.toLocaleString()}` : "no runs match";
    $("#prev").disabled = state.offset === 0; $("#next").disabled = last >= page.total;
    $("#compare-btn").disabled = selected.size < 2 || selected.size > 50;
    $("#compare-btn").textContent = selected.size > 50 ? "Compare: at most 50" : `Compare selected${selected.size ? ` (${selected.size})` : ""}`;
  };
  const load = async () => { try { const p = await api(query()); if ($("#runs")) render(p); } catch (e) { toast(e.message); } };
  let typing = null;
  const changed = () => { state.offset = 0; clearTimeout(typing); typing = setTimeout(load, 250); };
  for (const id of ["#filter", "#f-recipe", "#f-study", "#f-dataset", "#f-min"]) $(id).oninput = changed;
  $("#f-status").onchange = changed;
  $("#prev").onclick = () => { state.offset = Math.max(0, state.offset - state.limit); load(); };
  $("#next").onclick = () => { state.offset += state.limit; load(); };
  document.querySelectorAll("#runs th.sortable").forEach(th => th.onclick = () => {
    state.desc = state.sort === th.dataset.k ? !state.desc : true; state.sort = th.dataset.k; state.offset = 0; load();
  });
  $("#runs tbody").onchange = e => {
    const id = e.target.closest("tr").dataset.id;
    e.target.checked ? selected.add(id) : selected.delete(id);
    $("#compare-btn").disabled = selected.size < 2 || selected.size > 50;
    $("#compare-btn").textContent = selected.size > 50 ? "Compare: at most 50" : `Compare selected (${selected.size})`;
  };
  $("#compare-btn").onclick = () => { location.hash = "#/compare/" + [...selected].join(","); };
  every(2000, load);
}

// ------------------------------------------------------------------ Run
function runPage(id) {
  main.innerHTML = `<h1>Run <span id="run-id">${esc(id)}</span> <span id="run-status" class="status"></span></h1>
    <div class="card row"><div style="flex:1"><div id="progress-text">Loading…</div><div class="muted" id="eta"></div></div>
      <button id="stop-btn" class="danger" hidden>Stop</button><button id="resume-btn" hidden>Resume</button>
      <a class="button secondary" id="report-link" href="/api/v1/report?runs=${encodeURIComponent(id)}" download>Download report</a></div>
    <div class="charts"><div class="chart" id="loss-chart"></div><div class="chart" id="acc-chart"></div></div>
    <div class="charts machine" id="machine" style="display:none"><div class="chart" id="cpu-chart"></div><div class="chart" id="mem-chart"></div></div>
    <div class="row" style="margin-top:14px"><div class="card" style="flex:1;min-width:320px"><h2>Results</h2><div id="results"></div>
      <h2>Files</h2><div id="files"></div></div>
      <div class="card" style="flex:2;min-width:420px"><h2>Layers</h2><pre id="summary"></pre></div></div>
    <div class="row"><div class="card" style="flex:1;min-width:320px"><h2>Recipe</h2><pre id="recipe"></pre></div>
      <div class="card" style="flex:1;min-width:420px"><h2>History</h2><div id="history"></div></div></div>`;
  // The training line is the smoothed curve the run writes into each batch event (history.LiveCurve:
  // the last batches' means, smoothed across epochs, so no restart or spike at an epoch boundary);
  // runs recorded before it have only the epoch-to-date means, drawn with a break at each epoch.
  const lossChart = makeChart($("#loss-chart"), "Loss", [{label: "loss (training, smoothed)", spanGaps: false}, {label: "val_loss", color: COLORS[1], points: true}]);
  const accChart = makeChart($("#acc-chart"), "Accuracy", [{label: "acc (training, smoothed)", spanGaps: false}, {label: "val_acc", color: COLORS[1], points: true}]);
  const d = {x: [], loss: [], acc: [], vloss: [], vacc: []};
  // what the run used of the machine (`system` events, system/usage.py): its own CPU use against the
  // CPUs other programs kept busy (a starved run shows its share falling), memory, GPU where there is one
  // the charts are made with the first sample: GPU lines only for a run that has a GPU
  let cpuChart = null, memChart = null, gpu = false;
  const sys = {x: [], cpu: [], others: [], gpu: [], rss: [], gmem: []};
  const onSystem = e => {
    if (!cpuChart) {  // shown from the first sample (~2 s in; never for a run recorded before samples existed)
      $("#machine").style.display = "";
      gpu = e.gpu_mem_mb !== undefined;
      cpuChart = makeChart($("#cpu-chart"), "CPU", [{label: "this run (CPUs)"}, {label: "other programs (CPUs)", color: COLORS[4]},
        ...(gpu ? [{label: "GPU use (%/100)", color: COLORS[2]}] : [])], {ylabel: "CPUs"});
      memChart = makeChart($("#mem-chart"), "Memory", [{label: "resident (MB)"}, ...(gpu ? [{label: "GPU (MB)", color: COLORS[2]}] : [])],
        {ylabel: "MB"});
    }
    sys.x.push(e.epoch - 1 + e.step / e.steps); sys.cpu.push(e.cpu ?? null); sys.others.push(e.busy_elsewhere ?? null);
    sys.gpu.push(e.gpu_util === undefined ? null : e.gpu_util / 100); sys.rss.push(e.rss_mb ?? null); sys.gmem.push(e.gpu_mem_mb ?? null);
    cpuChart.setData(gpu ? [sys.x, sys.cpu, sys.others, sys.gpu] : [sys.x, sys.cpu, sys.others]);
    memChart.setData(gpu ? [sys.x, sys.rss, sys.gmem] : [sys.x, sys.rss]);
    $("#cpu-chart").dataset.points = sys.x.length;
    const el = $("#cpu-chart");
    el.dataset.maxOthers = Math.max(Number(el.dataset.maxOthers || 0), e.busy_elsewhere || 0);
    el.dataset.minCpu = Math.min(Number(el.dataset.minCpu ?? Infinity), e.cpu ?? Infinity);
  };
  let batches = 0, dirty = false, t0 = null, p0 = 0;
  const redraw = () => {
    if (!dirty) return; dirty = false;
    lossChart.setData([d.x, d.loss, d.vloss]); accChart.setData([d.x, d.acc, d.vacc]);
    $("#loss-chart").dataset.points = batches; $("#acc-chart").dataset.points = batches;
    $("#acc-chart").dataset.valPoints = d.vacc.filter(v => v !== null && v !== undefined).length;
  };
  every(200, redraw);
  let lastEpoch = null;
  const onBatch = e => {
    const smooth = e.smooth_loss !== undefined && e.smooth_loss !== null;
    if (!smooth && lastEpoch !== null && e.epoch !== lastEpoch) {  // an old run: break the line where the means restart
      d.x.push(e.epoch - 1 + 0.5 / e.steps); d.loss.push(null); d.acc.push(null); d.vloss.push(null); d.vacc.push(null);
    }
    lastEpoch = e.epoch;
    d.x.push(e.epoch - 1 + e.step / e.steps); d.loss.push(smooth ? e.smooth_loss : e.loss); d.acc.push(smooth ? e.smooth_acc : e.acc);
    d.vloss.push(null); d.vacc.push(null);
    batches++; dirty = true;
    const now = e.t;
    if (t0 === null || e.progress < p0) { t0 = now; p0 = e.progress; }
    const rate = (e.progress - p0) / Math.max(now - t0, 1e-6);
    $("#progress-text").textContent = `Training... (${(100 * e.progress).toFixed(1)}% done)`;
    $("#eta").textContent = `epoch ${e.epoch}, batch ${e.step}/${e.steps} · loss ${e.loss.toFixed(4)} · acc ${e.acc.toFixed(4)}` +
      (rate > 0 && e.progress < 1 ? ` · about ${dur((1 - e.progress) / rate)} left` : "");
  };
  const onEpoch = e => {
    // the epoch's last batch sits at the same x (epoch - 1 + steps/steps): the validation point joins
    // it there, rather than a second point at one x that the chart (and its hover) would pass over
    const i = d.x.length - 1;
    if (i >= 0 && Math.abs(d.x[i] - e.epoch) < 1e-9) { d.vloss[i] = e.val_loss; d.vacc[i] = e.val_acc; }
    else { d.x.push(e.epoch); d.loss.push(e.loss); d.acc.push(e.acc); d.vloss.push(e.val_loss); d.vacc.push(e.val_acc); }
    dirty = true;
  };
  const loadDetails = async () => {
    const info = await api(`/runs/${encodeURIComponent(id)}`);
    const rec = info.record, m = rec.metrics || {}, last = info.history[info.history.length - 1] || {};
    $("#run-status").textContent = info.live_status; $("#run-status").className = "status " + info.live_status;
    $("#stop-btn").hidden = info.live_status !== "running";
    $("#resume-btn").hidden = !["interrupted", "failed", "stale"].includes(info.live_status) || !info.files.length;
    if (info.live_status !== "running") {
      $("#progress-text").textContent = info.live_status === "completed"
        ? `Validation accuracy ${fmt(m.val_acc_at_best)} at the best epoch (${m.best_epoch ?? "–"}) · test accuracy ${fmt(m.test_acc)}`
        : `${info.live_status}${rec.error ? ": " + rec.error : ""}`;
      $("#eta").textContent = rec.timings ? `trained in ${dur(rec.timings.train_seconds)} (${dur(rec.timings.total_seconds)} in all)` : "";
    }
    $("#results").innerHTML = `<table><tr><td>recipe</td><td>${esc(rec.recipe)}</td></tr><tr><td>dataset</td><td>${esc(rec.dataset?.name)}</td></tr>
      <tr><td>final val acc</td><td id="final-val-acc">${fmt(m.val_acc ?? last.val_acc)}</td></tr>
      <tr><td>val acc at best epoch</td><td>${fmt(m.val_acc_at_best)}</td></tr>
      <tr><td>test acc</td><td id="test-acc">${fmt(m.test_acc)}</td></tr><tr><td>test loss</td><td>${fmt(m.test_loss)}</td></tr>
      <tr><td>epochs</td><td>${rec.epochs ?? "–"}</td></tr><tr><td>device</td><td>${esc(rec.device)}</td></tr>` +
      (rec.train_step ? `<tr><td>training step</td><td>${esc(rec.train_step)}</td></tr>` : "") +
      (rec.system?.peak_rss_mb ? `<tr><td>peak memory</td><td id="peak-mem">${Math.round(rec.system.peak_rss_mb)} MB</td></tr>` : "") +
      (rec.system?.cpu_mean !== undefined && rec.system?.cpu_mean !== null ? `<tr><td>mean CPU use</td><td>${rec.system.cpu_mean.toFixed(2)} of ${rec.system.cpus_allowed} CPUs` +
        (rec.system.starved_fraction ? ` · starved ${Math.round(100 * rec.system.starved_fraction)}% of the time` : "") + `</td></tr>` : "") +
      (rec.precision ? `<tr><td>precision</td><td title="${esc(rec.precision_reason ?? "")}">${esc(rec.precision)}</td></tr>` : "") + `</table>
      ${rec.status === "completed" ? `<p><a href="#/errors/${esc(id)}">Errors →</a> · <a href="#/try/${esc(id)}">Try it →</a></p>` : ""}`;
    $("#files").innerHTML = info.files.map(f => `<a href="/api/v1/runs/${esc(id)}/files/${esc(f)}" download>${esc(f)}</a>`).join(" · ") || "–";
    $("#summary").textContent = info.summary; $("#recipe").textContent = info.recipe_yaml;
    const cols = ["epoch", "loss", "acc", "val_loss", "val_acc", "lr", "seconds"];
    $("#history").innerHTML = `<table><tr>${cols.map(c => `<th class="num">${c}</th>`).join("")}</tr>` +
      info.history.map(h => `<tr>${cols.map(c => `<td class="num">${c === "epoch" ? h[c] : fmt(h[c], c === "lr" ? 6 : 4)}</td>`).join("")}</tr>`).join("") + "</table>";
    return info;
  };
  const es = new EventSource(`/api/v1/runs/${encodeURIComponent(id)}/events`);
  es.addEventListener("batch", m => onBatch(JSON.parse(m.data)));
  es.addEventListener("system", m => onSystem(JSON.parse(m.data)));
  es.addEventListener("epoch", m => { onEpoch(JSON.parse(m.data)); loadDetails().catch(() => {}); });
  es.addEventListener("status", m => { const e = JSON.parse(m.data); if (e.status !== "running") loadDetails().catch(() => {}); });
  es.addEventListener("end", () => { es.close(); redraw(); loadDetails().catch(() => {}); });
  cleanup.push(() => es.close());
  $("#stop-btn").onclick = async () => {
    try { await post(`/runs/${encodeURIComponent(id)}/stop`); setText("#progress-text", "Stopping after this step…"); }
    catch (e) { toast(e.message); }
  };
  $("#resume-btn").onclick = async () => {
    try {
      await post(`/runs/${encodeURIComponent(id)}/resume`); setText("#progress-text", "Resuming…");
      setTimeout(() => { if (location.hash === `#/run/${id}`) route(); }, 3000);  // unless the user has moved on
    } catch (e) { toast(e.message); }
  };
  loadDetails().catch(e => { setText("#progress-text", e.message); });
}

// ------------------------------------------------------------------ Compare
async function comparePage(ids) {
  if (!ids) {
    main.innerHTML = `<h1>Compare</h1><div class="card">Select two or more runs on the <a href="#/runs">Runs</a> page and press Compare.</div>`;
    return;
  }
  main.innerHTML = `<h1>Compare</h1><div class="charts"><div class="chart" id="cmp-vacc"></div><div class="chart" id="cmp-vloss"></div>
    <div class="chart" id="cmp-acc"></div><div class="chart" id="cmp-loss"></div></div>
    <div id="cmp-hidden"></div>
    <div class="card" style="margin-top:14px"><h2>Results <a class="button secondary" id="report-link" href="/api/v1/report?runs=${encodeURIComponent(ids)}" download>Download report</a></h2><div id="cmp-results"></div><h2>Settings that differ</h2><div id="cmp-diff"></div></div>`;
  let c;
  try { c = await api(`/compare?runs=${encodeURIComponent(ids)}`); } catch (e) { main.innerHTML = `<div class="error-line">${esc(e.message)}</div>`; return; }
  const names = c.runs.map((r, i) => c.runs.length <= 8 ? `${r.recipe} (${r.run_id.slice(-6)})` : `${i + 1}. ${r.recipe}`);
  const n = Math.max(...c.runs.map(r => r.history.length));
  const x = Array.from({length: n}, (_, i) => i + 1);
  for (const [el, key, title] of [["#cmp-vacc", "val_acc", "Validation accuracy"], ["#cmp-vloss", "val_loss", "Validation loss"],
                                  ["#cmp-acc", "acc", "Training accuracy"], ["#cmp-loss", "loss", "Training loss"]]) {
    const chart = makeChart($(el), title, names.map(l => ({label: l, points: true})));
    chart.setData([x, ...c.runs.map(r => x.map(i => (r.history[i - 1] || {})[key] ?? null))]);
    $(el).dataset.points = x.length;
  }
  const nameOf = id => names[c.runs.findIndex(r => r.run_id === id)];
  $("#cmp-hidden").innerHTML = (c.hidden || []).map(h => `<div class="card note">${esc(nameOf(h.run))} lies under
    ${esc(nameOf(h.under))}: the same values for all its ${h.epochs} epochs, so its line is hidden by the other one.</div>`).join("");
  $("#cmp-results").innerHTML = `<table><tr><th>run</th><th>status</th><th class="num">val acc (best epoch)</th><th class="num">test acc</th>
    <th class="num">peak memory</th><th class="num">mean CPU use</th></tr>` +
    c.runs.map((r, i) => `<tr><td><span style="color:${COLORS[i % COLORS.length]}">■</span> <a href="#/run/${esc(r.run_id)}" title="${esc(r.run_id)}">${esc(r.run_id)}</a></td>
      <td>${esc(r.status)}</td><td class="num">${fmt(r.val_acc_at_best)}</td><td class="num">${fmt(r.test_acc)}</td>
      <td class="num">${r.system?.peak_rss_mb ? Math.round(r.system.peak_rss_mb) + " MB" : "–"}</td>
      <td class="num">${r.system?.cpu_mean !== undefined && r.system?.cpu_mean !== null ? r.system.cpu_mean.toFixed(2) : "–"}</td></tr>`).join("") + "</table>";
  const keys = Object.keys(c.differences);
  if (!keys.length) { $("#cmp-diff").innerHTML = `<p class="muted">The recipes are the same.</p>`; return; }
  $("#cmp-diff").innerHTML = `<table class="diff"><tr><th>setting</th>${names.map(esc).map((nm, i) => `<th title="${esc(c.runs[i].run_id)}">${nm}</th>`).join("")}</tr>` +
    keys.map(k => `<tr><td>${esc(k)}</td>${c.differences[k].map(v => `<td class="changed">${esc(typeof v === "object" ? JSON.stringify(v) : v)}</td>`).join("")}</tr>`).join("") + "</table>";
}

// ------------------------------------------------------------------ Data
async function dataPage(name) {
  const list = (await api("/datasets")).datasets;
  name = name || "mnist";
  main.innerHTML = `<h1>Data</h1><div class="card row"><select id="ds">${list.map(n => `<option ${n === name ? "selected" : ""}>${esc(n)}</option>`).join("")}</select>
    <select id="split"><option>train</option><option>test</option></select><button id="more" class="secondary">More</button>
    <span class="muted" id="ds-info"></span></div><div class="card"><div class="grid" id="samples"></div></div>`;
  let start = 0;
  const load = async (append) => {
    try {
      const r = await api(`/datasets/${encodeURIComponent($("#ds").value)}/samples?split=${$("#split").value}&n=40&start=${start}`);
      if (!$("#samples")) return;  // the user moved on meanwhile
      $("#ds-info").textContent = `${r.size.toLocaleString()} ${r.split} images · classes: ${r.classes.join(", ")}`;
      const html = r.items.map(it => `<figure><img src="${it.image}" alt=""><figcaption>${esc(it.class_name)}</figcaption></figure>`).join("");
      $("#samples").innerHTML = append ? $("#samples").innerHTML + html : html;
    } catch (e) { setText("#ds-info", e.message); if (!append && $("#samples")) $("#samples").innerHTML = ""; }  // stays on the page, fix included
  };
  $("#ds").onchange = () => { location.hash = "#/data/" + $("#ds").value; };
  $("#split").onchange = () => { start = 0; load(false); };
  $("#more").onclick = () => { start += 40; load(true); };
  load(false);
}

// ------------------------------------------------------------------ Data health
const KIND_TITLES = {label: "Label issues: the given label is unlikely", leak: "Leaks: the same image in train and test",
  duplicate: "Near-duplicates within a split", outlier: "Outliers: far from every class", balance: "Class balance",
  unreadable: "Unreadable files"};

async function healthPage(jobArg) {
  const list = (await api("/datasets")).datasets;
  main.innerHTML = `<h1>Data health</h1><div class="card row">
    <select id="h-ds">${list.map(n => `<option ${n === "mnist" ? "selected" : ""}>${esc(n)}</option>`).join("")}</select>
    <select id="h-split"><option value="all">train + test</option><option value="train">train</option><option value="test">test</option></select>
    <label>folds <input id="h-folds" type="number" min="2" max="20" value="5" style="width:4em"></label>
    <label>first <input id="h-limit" type="number" min="20" placeholder="all" style="width:6em"> images</label>
    <button id="h-start">Check</button><span class="muted" id="h-status"></span></div>
    <div class="muted" id="h-explain">Each image is scored by a model that never trained on it (K-fold cross-fitting), then
    confident learning ranks the labels it finds unlikely; perceptual hashes find near-duplicates and train/test leaks.
    Your decisions go to a corrections file; the dataset's files are never changed.</div><div id="h-results"></div>`;
  $("#h-start").onclick = async () => {
    const limit = parseInt($("#h-limit").value, 10);
    try {
      const r = await post("/health/checks", {dataset: $("#h-ds").value, split: $("#h-split").value,
        folds: parseInt($("#h-folds").value, 10) || 5, limit: Number.isFinite(limit) ? limit : null});
      location.hash = "#/health/" + r.job.id;
    } catch (e) { setText("#h-status", e.message); }
  };
  if (!jobArg) return;
  let timer = null;
  const poll = async () => {
    let r;
    try { r = await api(`/health/checks/${encodeURIComponent(jobArg)}`); } catch (e) { setText("#h-status", e.message); return; }
    if (!$("#h-status")) return;  // the user moved on
    const j = r.job, p = j.progress;
    if (j.check && !poll.filled) {  // the form shows the check it is showing, not its defaults
      poll.filled = true;
      const ds = $("#h-ds");
      if (![...ds.options].some(o => o.value === j.check.dataset)) ds.add(new Option(j.check.dataset, j.check.dataset));
      ds.value = j.check.dataset; $("#h-split").value = j.check.split || "all";
      $("#h-folds").value = j.check.folds || 5; $("#h-limit").value = j.check.limit ?? "";
    }
    setText("#h-status", j.state === "completed" ? "" : `${j.label}: ${j.state}${p ? ` · ${p.stage} ${p.done}/${p.total}` : ""}${j.error ? ` · ${j.error}` : ""}`);
    if (r.report) { showHealth(r.report); return; }
    if (["queued", "starting", "running"].includes(j.state)) timer = setTimeout(poll, 1000);
  };
  cleanup.push(() => clearTimeout(timer));
  poll();
}

function healthCard(it, classes) {
  const where = it.index !== null && it.index !== undefined ? it.index : it.file;
  const id = `${it.split}:${where}`;
  const opts = classes.map(c => `<option ${c === it.suggested ? "selected" : ""}>${esc(c)}</option>`).join("");
  return `<figure class="suspect" data-split="${esc(it.split)}" data-index="${it.index ?? ""}" data-file="${esc(it.file ?? "")}">
    <img src="${it.image}" alt="${esc(id)}"><figcaption><b>${esc(id)}</b><br>given <b>${esc(it.given)}</b> → <b>${esc(it.suggested)}</b>
    <br><span class="muted">score ${fmt(it.score)}</span><br>
    <button class="secondary" data-act="keep">keep</button> <button data-act="relabel">relabel</button>
    <select data-label>${opts}</select> <button class="danger" data-act="exclude">exclude</button>
    <span class="decided muted"></span></figcaption></figure>`;
}

function showHealth(rep) {
  const byKind = k => rep.issues.filter(i => i.kind === k);
  const sum = Object.keys(KIND_TITLES).map(k => `${byKind(k).length} ${k}`).join(", ");
  let html = `<div class="card"><b>${esc(rep.dataset)}</b>: ${rep.images.toLocaleString()} images (${esc(rep.split)}), ${rep.folds}-fold
    ${esc(rep.recipe)}, out-of-sample accuracy ${fmt(rep.accuracy)}, ${Math.round(rep.seconds)} s: ${esc(sum)}.
    Decisions are saved to <code>${esc(rep.corrections)}</code>; train on them with <code>--set data.corrections=${esc(rep.corrections)}</code>.
    ${rep.accuracy < 0.8 ? `<div class="error-line">The cross-fitted models are right on only ${Math.round(100 * rep.accuracy)}% of the images they never saw: most label findings are then their mistakes, not the labels'. Check more images or the whole dataset.</div>` : ""}</div>`;
  for (const kind of Object.keys(KIND_TITLES)) {
    const items = byKind(kind);
    if (!items.length) continue;
    html += `<div class="card"><h2>${KIND_TITLES[kind]} (${items.length})</h2>`;
    if (kind === "label") html += `<div class="grid health">${items.map(it => healthCard(it, rep.classes)).join("")}</div>`;
    else if (kind === "leak" || kind === "duplicate") html += items.map(g => `<div class="row">${g.members.map(m =>
      `<figure><img src="${m.image}" alt=""><figcaption>${esc(m.split)}:${esc(m.index ?? m.file)}<br>${esc(m.label)}</figcaption></figure>`).join("")}
      ${g.labels_agree ? "" : "<span class='error-line'>their labels differ</span>"}</div>`).join("");
    else if (kind === "outlier") html += `<div class="grid">${items.map(it => `<figure><img src="${it.image}" alt=""><figcaption>${esc(it.split)}:${esc(it.index ?? it.file)}<br><span class="muted">${esc(it.reason)}</span></figcaption></figure>`).join("")}</div>`;
    else html += items.map(it => `<div>${esc(it.file || it.split || "")} ${esc(it.reason)}</div>`).join("");
    html += "</div>";
  }
  $("#h-results").innerHTML = html;
  $("#h-results").onclick = async e => {
    const b = e.target.closest("[data-act]");
    if (!b) return;
    const fig = b.closest(".suspect");
    const body = {dataset: rep.requested, split: fig.dataset.split, action: b.dataset.act,
      index: fig.dataset.index === "" ? null : parseInt(fig.dataset.index, 10), file: fig.dataset.file || null,
      label: b.dataset.act === "relabel" ? fig.querySelector("[data-label]").value : null};
    try {
      await post("/health/corrections", body);
      fig.querySelector(".decided").textContent = b.dataset.act === "relabel" ? `relabeled ${body.label}` : `${b.dataset.act} saved`;
      fig.classList.add("done");
    } catch (x) { fig.querySelector(".decided").textContent = x.message; }
  };
}

// ------------------------------------------------------------------ Errors
async function runPicker(selectedId, hashPrefix, choose = models => models[0]) {
  // the server lists drawing models first (mnist-draw, then MNIST), tuning trials last; `choose` picks the default
  const models = (await api("/models")).models;
  const id = selectedId || ((choose(models) || models[0]) || {}).run_id;
  const html = `<select id="run-pick">${models.map(m => `<option value="${esc(m.run_id)}" ${m.run_id === id ? "selected" : ""}>
    ${esc(m.recipe)} · ${esc(m.dataset || "")} · ${esc(m.run_id)} · test ${fmt(m.test_acc)}${m.study ? " · trial of " + esc(m.study) : ""}</option>`).join("")}</select>`;
  return {id, models, html, bind: () => { $("#run-pick").onchange = () => { location.hash = hashPrefix + $("#run-pick").value; }; }};
}

async function errorsPage(id) {
  const newestOwn = models => models.filter(m => !m.study).sort((a, b) => (b.started_at || "").localeCompare(a.started_at || ""))[0];
  const pick = await runPicker(id, "#/errors/", newestOwn);  // the newest run you trained, not a trial
  if (!pick.id) { main.innerHTML = `<h1>Errors</h1><div class="card">No completed run yet: train one on the <a href="#/train">Train</a> page.</div>`; return; }
  main.innerHTML = `<h1>Errors</h1><div class="card row">${pick.html}<span class="muted" id="err-info">evaluating the test set…</span></div>
    <div class="row"><div class="card"><h2>Confusion matrix (rows: true class, columns: predicted)</h2><div id="heat"></div></div>
    <div class="card" style="flex:1;min-width:320px"><h2>Per class</h2><div id="per-class"></div></div></div>
    <div class="card"><h2 id="cell-title">Click a cell to see its images, highest loss first</h2><div class="grid" id="cell"></div></div>`;
  pick.bind();
  let rep;
  try { rep = await api(`/runs/${encodeURIComponent(pick.id)}/errors`); } catch (e) { $("#err-info").textContent = e.message; return; }
  $("#err-info").textContent = `test accuracy ${fmt(rep.accuracy)} on ${rep.n.toLocaleString()} images · loss ${fmt(rep.loss)}`;
  const cm = rep.confusion, k = cm.length;
  const cell = (i, j) => {
    const row = cm[i].reduce((a, b) => a + b, 0) || 1, f = cm[i][j] / row;
    const bg = i === j ? `rgba(31,138,76,${0.15 + 0.85 * f})` : `rgba(200,55,45,${Math.min(1, 6 * f)})`;
    return `<td data-t="${i}" data-p="${j}" style="background:${bg};color:${f > 0.5 ? "#fff" : "#1d2430"}" title="true ${esc(rep.classes[i])}, predicted ${esc(rep.classes[j])}: ${cm[i][j]}">${cm[i][j]}</td>`;
  };
  $("#heat").innerHTML = `<table class="heat"><tr><th></th>${rep.classes.map(c => `<th>${esc(c.slice(0, 8))}</th>`).join("")}</tr>` +
    cm.map((r, i) => `<tr><td class="head">${esc(rep.classes[i])}</td>${r.map((_, j) => cell(i, j)).join("")}</tr>`).join("") + "</table>";
  $("#per-class").innerHTML = `<table><tr><th>class</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th><th class="num">support</th></tr>` +
    rep.per_class.map(c => `<tr><td>${esc(c.name ?? c.class_name ?? "")}</td><td class="num">${fmt(c.precision)}</td><td class="num">${fmt(c.recall)}</td>
      <td class="num">${fmt(c.f1)}</td><td class="num">${c.support}</td></tr>`).join("") + "</table>";
  $("#heat").onclick = async e => {
    const td = e.target.closest("td[data-t]"); if (!td) return;
    document.querySelectorAll(".heat td.sel").forEach(x => x.classList.remove("sel")); td.classList.add("sel");
    const r = await api(`/runs/${encodeURIComponent(pick.id)}/errors/cell?true=${td.dataset.t}&pred=${td.dataset.p}`);
    $("#cell-title").textContent = `true ${r.true_name}, predicted ${r.pred_name}: ${r.items.length} shown, highest loss first`;
    $("#cell").innerHTML = r.items.map(it => `<figure><img src="${it.image}" alt=""><figcaption>#${it.index}<br>${esc(r.true_name)} → ${esc(r.pred_name)}
      (${pct(it.confidence)})<br>loss ${it.loss.toFixed(2)}</figcaption></figure>`).join("") || "<span class='muted'>no images in this cell</span>";
  };
}

// ------------------------------------------------------------------ Try it
async function tryPage(id) {
  const pick = await runPicker(id, "#/try/");
  if (!pick.id) { main.innerHTML = `<h1>Try it</h1><div class="card">No completed run yet: train one on the <a href="#/train">Train</a> page.</div>`; return; }
  const model = pick.models.find(m => m.run_id === pick.id) || {};
  const drawable = ["mnist", "fashion-mnist"].includes(model.dataset);
  main.innerHTML = `<h1>Try it</h1><div class="card row">${pick.html}<span class="muted">classes: ${esc((model.classes || []).join(", "))}</span></div>
    <div class="row"><div class="card">${drawable ? `<h2>Draw ${model.dataset === "mnist" ? "a digit" : "something"}</h2>
      <canvas id="canvas" width="280" height="280"></canvas><div class="row" style="margin-top:8px"><button id="clear" class="secondary">Clear</button>` : "<div class='row'>"}
      <label>or upload an image <input type="file" id="upload" accept="image/*"></label></div></div>
    <div class="card" style="min-width:360px"><h2>Prediction</h2><div id="pred-name" style="font-size:22px;font-weight:700">–</div>
      <div class="probs" id="probs"></div><div id="ood"></div></div>
    <div class="card"><h2>What the model sees</h2><img id="seen" class="seen" alt=""><div class="muted">the ${esc(model.dataset)} input after the same preparation as <code>trainlab predict</code></div></div></div>`;
  pick.bind();
  const send = async (blob, name) => {
    const fd = new FormData(); fd.append("file", blob, name);
    try {
      const r = await api(`/predict?run=${encodeURIComponent(pick.id)}&top_k=5`, {method: "POST", body: fd});
      if (r.failures.length) { toast(r.failures[0].error); return; }
      const res = r.results[0];
      $("#pred-name").textContent = `${res.class_name} (${pct(res.probability)})`;
      $("#probs").innerHTML = res.top_k.map(t => `<div class="p"><span class="name">${esc(t.class_name)}</span>
        <span class="pbar" style="width:${Math.max(2, 220 * t.probability)}px"></span><span>${pct(t.probability)}</span></div>`).join("");
      $("#seen").src = res.model_input;
      $("#ood").innerHTML = res.ood ? `<div class="warn">${res.warnings.map(esc).join("<br>")}</div>` : "";
    } catch (e) { toast(e.message); }
  };
  $("#upload").onchange = e => { const f = e.target.files[0]; if (f) send(f, f.name); };
  if (!drawable) return;
  const cv = $("#canvas"), ctx = cv.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, cv.width, cv.height); };
  clear();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = "round"; ctx.lineJoin = "round";
  let drawing = false, last = null;
  const pos = e => { const b = cv.getBoundingClientRect(); return [(e.clientX - b.left) * cv.width / b.width, (e.clientY - b.top) * cv.height / b.height]; };
  cv.onpointerdown = e => { drawing = true; last = pos(e); cv.setPointerCapture(e.pointerId); ctx.beginPath(); ctx.arc(last[0], last[1], 9, 0, 7); ctx.fillStyle = "#fff"; ctx.fill(); };
  cv.onpointermove = e => {
    if (!drawing) return; const p = pos(e);
    ctx.beginPath(); ctx.moveTo(last[0], last[1]); ctx.lineTo(p[0], p[1]); ctx.stroke(); last = p;
  };
  cv.onpointerup = cv.onpointercancel = () => {
    if (!drawing) return; drawing = false;
    cv.toBlob(b => send(b, "drawing.png"), "image/png");
  };
  $("#clear").onclick = () => { clear(); $("#pred-name").textContent = "–"; $("#probs").innerHTML = ""; $("#seen").removeAttribute("src"); $("#ood").innerHTML = ""; };
}

// ------------------------------------------------------------------ Train
function resolveRef(schema, s) {
  while (s && s.$ref) s = schema.$defs[s.$ref.split("/").pop()];
  return s || {};
}

function fieldHtml(schema, path, prop, value) {
  const s = resolveRef(schema, prop);
  const id = "f-" + path.replace(/\./g, "-");
  const desc = prop.description || s.description || "";
  if (s.type === "object" && s.properties) {
    return `<fieldset><legend>${esc(path.split(".").pop())}</legend>` +
      Object.entries(s.properties).map(([k, p]) => fieldHtml(schema, `${path}.${k}`, p, (value || {})[k])).join("") + "</fieldset>";
  }
  let input;
  const enumValues = s.enum || (s.anyOf && s.anyOf.every(a => a.const !== undefined || a.enum) ? s.anyOf.flatMap(a => a.enum || [a.const]) : null);
  if (enumValues) {
    input = `<select id="${id}" data-path="${esc(path)}" data-kind="enum">${enumValues.map(v => `<option ${v === value ? "selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  } else if (s.type === "boolean") {
    input = `<input type="checkbox" id="${id}" data-path="${esc(path)}" data-kind="bool" ${value ? "checked" : ""}>`;
  } else if (s.type === "integer" || s.type === "number") {
    input = `<input type="number" step="any" id="${id}" data-path="${esc(path)}" data-kind="number" value="${esc(value)}">`;
  } else if (s.type === "array" || s.type === "object") {
    input = `<textarea id="${id}" data-path="${esc(path)}" data-kind="json">${esc(JSON.stringify(value, null, 1))}</textarea>`;
  } else if (s.type === "string") {
    input = `<input type="text" id="${id}" data-path="${esc(path)}" data-kind="string" value="${esc(value)}" size="40">`;
  } else {
    input = `<input type="text" id="${id}" data-path="${esc(path)}" data-kind="any" value="${esc(value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : value)}" size="40">`;
  }
  return `<label for="${id}">${esc(path)}${input}${desc ? `<span class="desc">${esc(desc)}</span>` : ""}</label>`;
}

function readField(el) {
  const k = el.dataset.kind;
  if (k === "bool") return el.checked;
  if (k === "number") return el.value === "" ? null : Number(el.value);
  if (k === "json") {
    try { return JSON.parse(el.value); }
    catch (e) { throw new Error(`${el.dataset.path}: not valid JSON (${e.message}); write it as in the recipe, e.g. [28, 28]`); }
  }
  if (k === "any") { if (el.value === "") return null; try { return JSON.parse(el.value); } catch { return el.value; } }
  return el.value;
}

function getPath(obj, path) { return path.split(".").reduce((o, k) => (o == null ? undefined : o[k]), obj); }

async function trainPage() {
  const [presets, schema] = await Promise.all([api("/presets"), api("/schema")]);
  main.innerHTML = `<h1>Train</h1><div class="card row"><label>Preset <select id="preset">${presets.presets.map(p =>
      `<option value="${esc(p.name)}">${esc(p.name)} (${esc(p.dataset)}, ${p.epochs} epochs)</option>`).join("")}</select></label>
    <label>or upload a recipe <input type="file" id="recipe-file" accept=".yaml,.yml"></label></div>
    <div class="card sticky-host"><div class="muted" id="preset-desc"></div><form class="form" id="recipe-form"></form>
      <div class="start-bar"><div class="error-line" id="train-error"></div><button id="start">Start</button> <span class="muted" id="start-info"></span></div></div>
    <div class="card"><h2>Jobs</h2><div id="jobs"></div></div>`;
  let base = null;
  if (presets.presets.some(p => p.name === "mnist-tfjs-cnn")) $("#preset").value = "mnist-tfjs-cnn";
  const loadPreset = async () => {
    const p = await api(`/presets/${encodeURIComponent($("#preset").value)}`);
    base = p.recipe;
    $("#preset-desc").textContent = base.description;
    $("#recipe-form").innerHTML = Object.entries(schema.properties).filter(([k]) => k !== "description")
      .map(([k, prop]) => fieldHtml(schema, k, prop, base[k])).join("");
  };
  const overrides = () => {
    const out = {};
    document.querySelectorAll("#recipe-form [data-path]").forEach(el => {
      const v = readField(el), was = getPath(base, el.dataset.path);
      if (JSON.stringify(v) !== JSON.stringify(was ?? null) && !(v === null && was === undefined)) out[el.dataset.path] = v;
    });
    return out;
  };
  const start = async body => {
    $("#train-error").textContent = "";
    try {
      const r = await post("/train", body);
      $("#start-info").textContent = `job ${r.job.id} ${r.job.state}; waiting for it to start…`;
      waitForRun(r.job.id);
    } catch (e) { $("#train-error").textContent = e.message; }
  };
  const waitForRun = async jobId => {
    for (let i = 0; i < 600; i++) {
      const j = await api(`/jobs/${jobId}`);
      if (j.run_id) { location.hash = "#/run/" + j.run_id; return; }
      if (["failed", "cancelled"].includes(j.state)) { setText("#train-error", j.error || j.state); return; }
      setText("#start-info", `job ${j.id} ${j.state}…`);
      await new Promise(r => setTimeout(r, 500));
      if (!location.hash.startsWith("#/train")) return;
    }
  };
  $("#preset").onchange = loadPreset;
  $("#start").onclick = () => {
    let o;
    try { o = overrides(); } catch (e) { $("#train-error").textContent = e.message; return; }  // names the field
    start({preset: $("#preset").value, overrides: o});
  };
  $("#recipe-file").onchange = async e => { const f = e.target.files[0]; if (f) start({recipe_yaml: await f.text()}); };
  every(2000, async () => {
    const j = (await api("/jobs")).jobs;
    $("#jobs").innerHTML = j.length ? `<table><tr><th>job</th><th>recipe</th><th>state</th><th>run</th><th></th></tr>` + j.map(x =>
      `<tr><td>${x.id}</td><td>${esc(x.label)}</td><td>${esc(x.state)}${x.error ? ": " + esc(x.error) : ""}</td>
       <td>${x.run_id ? `<a href="#/run/${esc(x.run_id)}">${esc(x.run_id)}</a>` : "–"}</td>
       <td>${["queued", "starting", "running"].includes(x.state) ? `<button class="danger" data-stop="${x.id}">Stop</button>` : ""}</td></tr>`).join("") + "</table>"
      : "<span class='muted'>none yet</span>";
  });
  $("#jobs").onclick = async e => { const b = e.target.closest("[data-stop]"); if (b) { try { await post(`/jobs/${b.dataset.stop}/stop`); } catch (x) { toast(x.message); } } };
  await loadPreset();
}

// ------------------------------------------------------------------ Studies
// Optuna studies, drawn with the same chart library as the rest of the page (no second app to run
// and guard): the trials table, the optimisation history, every trial's intermediate curve (a pruned
// trial's curve ends where the pruner cut it, dashed), parallel coordinates and Optuna's importances.
async function studiesPage() {
  const [presets, list] = await Promise.all([api("/presets"), api("/studies")]);
  main.innerHTML = `<h1>Studies</h1>
    <div class="card"><h2>Start a search</h2><div class="row">
      <label>recipe <select id="s-preset">${presets.presets.map(p => `<option ${p.name === "walk-1-baseline" ? "selected" : ""}>${esc(p.name)}</option>`).join("")}</select></label>
      <label>space <select id="s-space">${["walk", "mlp", "cnn", "fast"].map(n => `<option>${n}</option>`).join("")}</select></label>
      <label>trials <input id="s-trials" type="number" min="1" max="1000" value="10" style="width:5em"></label>
      <label>or minutes <input id="s-minutes" type="number" min="1" placeholder="no limit" style="width:6em"></label>
      <button id="s-start">Start a search</button><span class="muted" id="s-status"></span></div></div>
    <div class="card"><div class="scroll"><table id="studies"><thead><tr><th>study</th><th>recipe</th><th class="num">trials</th>
      <th class="num">best value</th><th class="num">best trial</th><th>direction</th><th>started</th></tr></thead><tbody></tbody></table></div>
      <p class="muted">Storage: <code>${esc(list.storage)}</code></p></div>`;
  $("#s-start").onclick = async () => {
    const minutes = parseFloat($("#s-minutes").value), trials = parseInt($("#s-trials").value, 10);
    try {
      const r = await post("/studies", {preset: $("#s-preset").value, space: $("#s-space").value,
        trials: Number.isFinite(trials) ? trials : null, timeout: Number.isFinite(minutes) ? 60 * minutes : null});
      location.hash = "#/study/" + encodeURIComponent(r.job.tune.study);
    } catch (e) { setText("#s-status", e.message); }
  };
  const render = rows => {
    const body = $("#studies tbody");
    if (!body) return;
    body.innerHTML = rows.map(s => `<tr><td><a href="#/study/${encodeURIComponent(s.study)}">${esc(s.study)}</a></td>
      <td>${esc(s.recipe ?? "")}</td><td class="num">${s.trials}</td><td class="num">${fmt(s.best_value)}</td>
      <td class="num">${s.best_trial ?? "–"}</td><td>${esc(s.direction)}</td><td>${age(s.started)}</td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">No study yet: start one above, or run trainlab tune RECIPE --space SPACE.</td></tr>`;
  };
  render(list.studies);
  every(3000, async () => { try { render((await api("/studies")).studies); } catch (e) { toast(e.message); } });
}

const STATE_COLORS = {complete: COLORS[0], pruned: COLORS[4], fail: "#999", running: COLORS[2], interrupted: COLORS[6]};

function studyPage(name) {
  main.innerHTML = `<h1>Study <span id="study-name">${esc(name)}</span></h1>
    <div class="card" id="study-head">Loading…</div>
    <div class="charts"><div class="chart" id="history-chart"></div><div class="chart" id="steps-chart"></div></div>
    <div class="card"><h2>Parallel coordinates</h2><div id="parcoords" class="scroll"></div></div>
    <div class="row"><div class="card" style="flex:1;min-width:300px"><h2>Parameter importances</h2><div id="importances"></div></div>
      <div class="card" style="flex:2;min-width:320px"><h2>Best trial</h2><div id="best"></div></div></div>
    <div class="card"><h2>Trials</h2><div class="scroll"><table id="trials"></table></div></div>`;
  let charts = null, shown = "";
  const refresh = async () => {
    let st;
    try { st = await api(`/studies/${encodeURIComponent(name)}`); } catch (e) { setText("#study-head", e.message); return; }
    if (!$("#study-head")) return;
    const key = JSON.stringify([st.trials.map(t => [t.number, t.state, t.value, t.intermediate.length]), st.importances]);
    if (key === shown) return;  // nothing new: leave the page as it is
    shown = key;
    const counts = Object.entries(st.counts).map(([k, n]) => `${n} ${k}`).join(", ");
    $("#study-head").innerHTML = `recipe <b>${esc(st.recipe)}</b> · ${esc(st.direction)} <b>${esc(st.objective)}</b> · trials: ${esc(counts || "none")}
      <span class="muted"> · storage <code>${esc(st.storage)}</code></span>`;
    charts = charts || {
      history: makeChart($("#history-chart"), "Optimisation history", [{label: "trial value", points: true, spanGaps: true, width: 0},
        {label: "best so far", color: COLORS[1]}], {xlabel: "trial"}),
      steps: null};
    drawHistory(st, charts.history);
    charts.steps = drawSteps(st, charts.steps);
    drawParcoords(st);
    drawImportances(st);
    drawBest(st);
    drawTrials(st);
  };
  every(2000, refresh);
}

function drawHistory(st, chart) {
  const done = st.trials.filter(t => t.value !== null && t.value !== undefined);
  const better = st.direction === "maximize" ? Math.max : Math.min;
  let best = null;
  const x = [], v = [], b = [];
  for (const t of st.trials) {
    x.push(t.number); v.push(t.value ?? null);
    if (t.value !== null && t.value !== undefined) best = best === null ? t.value : better(best, t.value);
    b.push(best);
  }
  chart.setData([x, v, b]);
  $("#history-chart").dataset.points = done.length;
}

function drawSteps(st, old) {
  // one line per trial: the objective it reported at each epoch; a pruned trial's line ends where it was cut
  if (old) old.destroy();
  const el = $("#steps-chart");
  el.innerHTML = "";
  const trials = st.trials.filter(t => t.intermediate.length);
  const epochs = [...new Set(trials.flatMap(t => t.intermediate.map(p => p[0])))].sort((a, b) => a - b);
  // a pruned trial: dashed, its points drawn, so even a curve cut after one epoch shows where it stopped
  const series = trials.map(t => ({label: `#${t.number} ${t.state}`, color: STATE_COLORS[t.state] || COLORS[3],
    dash: t.state === "pruned" ? [6, 4] : undefined, width: t.state === "pruned" ? 1.5 : 1, points: t.state === "pruned"}));
  const chart = makeChart(el, "Intermediate values (per epoch)", series, {xlabel: "epoch"});
  const data = [epochs, ...trials.map(t => { const m = new Map(t.intermediate); return epochs.map(e => m.has(e) ? m.get(e) : null); })];
  chart.setData(data);
  el.dataset.trials = trials.length;
  el.dataset.pruned = trials.filter(t => t.state === "pruned").map(t => t.intermediate.length).join(",");
  return chart;
}

function drawParcoords(st) {
  // one vertical axis per parameter and one for the objective; each complete trial a line across them
  const trials = st.trials.filter(t => t.value !== null && t.value !== undefined);
  const axes = [...st.params, st.objective];
  const el = $("#parcoords");
  el.dataset.lines = trials.length;
  if (!trials.length) { el.innerHTML = `<p class="muted">No complete trial yet.</p>`; return; }
  const W = Math.max(320, 140 * axes.length), H = 260, pad = 30;
  const val = (t, a) => a === st.objective ? t.value : t.params[a];
  const scales = axes.map(a => {
    const vals = trials.map(t => val(t, a));
    if (vals.every(v => typeof v === "number")) {
      const logs = vals.every(v => v > 0) && Math.max(...vals) / Math.min(...vals) > 50;
      const f = v => logs ? Math.log10(v) : v;
      const lo = Math.min(...vals.map(f)), hi = Math.max(...vals.map(f));
      return {pos: v => hi === lo ? H / 2 : H - pad - (f(v) - lo) / (hi - lo) * (H - 2 * pad), lo: Math.min(...vals), hi: Math.max(...vals)};
    }
    const cats = [...new Set(vals.map(String))];
    return {pos: v => cats.length === 1 ? H / 2 : H - pad - cats.indexOf(String(v)) / (cats.length - 1) * (H - 2 * pad), cats};
  });
  const xs = axes.map((_, i) => 40 + i * (W - 80) / Math.max(1, axes.length - 1));
  const values = trials.map(t => t.value), vlo = Math.min(...values), vhi = Math.max(...values);
  const shade = v => { const q = vhi === vlo ? 1 : (v - vlo) / (vhi - vlo); const good = st.direction === "maximize" ? q : 1 - q;
                       return `hsl(${Math.round(10 + 200 * good)}, 70%, 45%)`; };
  const lines = trials.map(t => `<polyline fill="none" stroke="${shade(t.value)}" stroke-width="1.5" opacity="0.8"
      points="${axes.map((a, i) => `${xs[i].toFixed(1)},${scales[i].pos(val(t, a)).toFixed(1)}`).join(" ")}"><title>trial ${t.number}: ${esc(st.objective)} ${t.value.toFixed(4)}</title></polyline>`).join("");
  const axisSvg = axes.map((a, i) => `<line x1="${xs[i]}" x2="${xs[i]}" y1="${pad}" y2="${H - pad}" stroke="#888"/>
      <text x="${xs[i]}" y="16" text-anchor="middle" font-size="11">${esc(a.split(".").slice(-2).join("."))}</text>
      <text x="${xs[i]}" y="${H - 8}" text-anchor="middle" font-size="10" fill="#666">${esc(scales[i].cats ? scales[i].cats.join(" · ").slice(0, 30) : `${+scales[i].lo.toPrecision(3)} – ${+scales[i].hi.toPrecision(3)}`)}</text>`).join("");
  el.innerHTML = `<svg width="${W}" height="${H}" role="img" aria-label="parallel coordinates">${axisSvg}${lines}</svg>`;
}

function drawImportances(st) {
  const items = Object.entries(st.importances || {}).sort((a, b) => b[1] - a[1]);
  $("#importances").innerHTML = items.length ? `<div class="probs">${items.map(([k, v]) => `<div class="p"><span class="name" title="${esc(k)}">${esc(k.split(".").slice(-2).join("."))}</span>
    <span class="pbar" style="width:${Math.max(2, 200 * v)}px"></span><span>${(100 * v).toFixed(0)}%</span></div>`).join("")}</div>`
    : `<p class="muted">Optuna estimates them once 3 trials with different parameters have completed.</p>`;
}

function drawBest(st) {
  const b = st.best, el = $("#best");
  if (!b) { el.innerHTML = `<p class="muted">No complete trial yet.</p>`; return; }
  el.innerHTML = `<p>Trial <b>${b.number}</b>: ${esc(st.objective)} <b>${b.value.toFixed(4)}</b>${b.test_acc !== null && b.test_acc !== undefined ? ` · test acc ${b.test_acc.toFixed(4)}` : ""}
    ${b.run_id ? ` · run <a href="#/run/${esc(b.run_id)}">${esc(b.run_id)}</a>` : ""}</p>
    <p>${Object.entries(b.params).map(([k, v]) => `<code>${esc(k)}=${esc(typeof v === "number" ? +v.toPrecision(4) : v)}</code>`).join(" ")}</p>
    <button id="train-best">Train this recipe</button> <button class="secondary" id="show-best">Show its recipe</button>
    <span class="muted" id="best-status"></span><pre id="best-yaml" hidden>${esc(st.best_recipe_yaml || "")}</pre>`;
  $("#show-best").onclick = () => { $("#best-yaml").hidden = !$("#best-yaml").hidden; };
  $("#train-best").onclick = async () => {
    try {
      const r = await post("/train", {recipe_yaml: st.best_recipe_yaml});
      setText("#best-status", `job ${r.job.id} queued: follow it on the Train page`);
      $("#best-status").dataset.job = r.job.id;
    } catch (e) { setText("#best-status", e.message); }
  };
}

function drawTrials(st) {
  const cols = ["#", "state", st.objective, ...st.params.map(p => p.split(".").slice(-2).join(".")), "epochs", "duration", "run"];
  $("#trials").innerHTML = `<tr>${cols.map(c => `<th>${esc(c)}</th>`).join("")}</tr>` + st.trials.map(t =>
    `<tr data-state="${esc(t.state)}"><td class="num">${t.number}</td><td><span class="status ${t.state === "complete" ? "completed" : t.state === "pruned" ? "interrupted" : esc(t.state)}">${esc(t.state)}</span></td>
     <td class="num">${fmt(t.value)}</td>${st.params.map(p => `<td class="num">${esc(typeof t.params[p] === "number" ? +t.params[p].toPrecision(4) : t.params[p] ?? "–")}</td>`).join("")}
     <td class="num">${t.epochs ?? (t.intermediate.length || "–")}</td><td class="num">${dur(t.seconds)}</td>
     <td>${t.run_id ? `<a href="#/run/${esc(t.run_id)}">${esc(t.run_id)}</a>` : "–"}</td></tr>`).join("");
}

// ------------------------------------------------------------------ router
async function route() {
  cleanup.forEach(f => { try { f(); } catch { /* already gone */ } });
  cleanup = [];
  const [page, arg] = (location.hash.replace(/^#\/?/, "") || "runs").split("/");
  document.querySelectorAll("nav a").forEach(a => a.classList.toggle("active", a.dataset.page === page ||
    (page === "run" && a.dataset.page === "runs") || (page === "study" && a.dataset.page === "studies")));
  const arg2 = arg ? decodeURIComponent(arg) : undefined;
  try {
    if (page === "run" && arg2) runPage(arg2);
    else if (page === "compare") await comparePage(arg2);
    else if (page === "data") await dataPage(arg2);
    else if (page === "health") await healthPage(arg2);
    else if (page === "errors") await errorsPage(arg2);
    else if (page === "try") await tryPage(arg2);
    else if (page === "train") await trainPage();
    else if (page === "studies") await studiesPage();
    else if (page === "study" && arg2) studyPage(arg2);
    else runsPage();
  } catch (e) { main.innerHTML = `<div class="error-line">${esc(e.message)}</div>`; }
}

async function jobsBadge() {
  try {
    const j = (await api("/jobs")).jobs.filter(x => ["queued", "starting", "running"].includes(x.state));
    const what = j.every(x => x.kind === "check") ? "data check" : j.every(x => x.kind !== "check") ? "training job" : "job";
    $("#jobs-badge").textContent = j.length ? `${j.length} ${what}${j.length > 1 ? "s" : ""} active` : "";
  } catch { /* the page shows errors where they matter */ }
}

window.addEventListener("hashchange", route);
setInterval(jobsBadge, 3000);
route();
