// vaelab explorer: draws the encoded test points, decodes the point under the pointer,
// shows interpolation strips. Talks only to its own server (/api/...); no libraries.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
  "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];
const $ = (id) => document.getElementById(id);
const canvas = $("latent");
const ctx = canvas.getContext("2d");

const state = {
  info: null,      // /api/info payload
  view: null,      // {x0, x1, y0, y1} in projected coordinates
  layer: null,     // offscreen canvas with the points
  anchor: null,    // the code the pointer plane passes through (continuous latents)
  z: null,         // the code being shown
  ends: [],        // clicked interpolation end points [{z}]
  classColor: new Map(),
  decodes: 0,
};

// -- server ------------------------------------------------------------------------------
async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  let data;
  try { data = await response.json(); } catch (err) { data = {error: response.statusText}; }
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function setStatus(message, isError = false) {
  const el = $("status");
  el.textContent = message;
  el.classList.toggle("error", isError);
}

// latest-wins request queue: at most one decode in flight, intermediate points are skipped
let pending = null;
let inflight = false;
function requestDecode(z) {
  pending = z.slice();
  if (!inflight) pump();
}
async function pump() {
  inflight = true;
  while (pending) {
    const z = pending;
    pending = null;
    try {
      const data = await api("/api/decode", {run: state.info.run, z});
      $("decoded").src = data.image;
      state.decodes += 1;
      document.body.dataset.decodes = String(state.decodes);
      document.body.dataset.ready = "1";
      setStatus(`decoded in ${data.decode_ms.toFixed(1)} ms`);
    } catch (err) {
      setStatus(err.message, true);
    }
  }
  inflight = false;
}

async function requestInterpolation() {
  if (state.ends.length < 2) return;
  const steps = Math.max(2, Math.min(state.info.max_steps, parseInt($("steps").value, 10) || 10));
  try {
    const data = await api("/api/interpolate", {
      run: state.info.run, a: state.ends[0].z, b: state.ends[1].z, steps, mode: $("mode").value,
    });
    $("strip").src = data.image;
    $("strip-box").hidden = false;
    document.body.dataset.strips = String((parseInt(document.body.dataset.strips || "0", 10)) + 1);
  } catch (err) {
    setStatus(err.message, true);
  }
}

// -- geometry ----------------------------------------------------------------------------
function project(z) {
  const {center, basis} = state.info.projection;
  const out = [0, 0];
  for (let r = 0; r < 2; r++) {
    for (let d = 0; d < z.length; d++) out[r] += (z[d] - center[d]) * basis[r][d];
  }
  return out;
}

function lift(uv, anchor) {
  const {basis} = state.info.projection;
  const at = project(anchor);
  const limit = state.info.limit;
  return anchor.map((a, d) => {
    const v = a + (uv[0] - at[0]) * basis[0][d] + (uv[1] - at[1]) * basis[1][d];
    return Math.max(-limit, Math.min(limit, v));
  });
}

function nearest(uv) {
  let best = 0;
  let bestDist = Infinity;
  state.info.points.forEach((p, i) => {
    const d = (p[0] - uv[0]) ** 2 + (p[1] - uv[1]) ** 2;
    if (d < bestDist) { bestDist = d; best = i; }
  });
  return best;
}

function codeAt(uv) {
  if (state.info.discrete || $("snap").checked) {
    return state.info.codes[nearest(uv)].slice();
  }
  return lift(uv, state.anchor);
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
}

function computeView() {
  const pts = state.info.points;
  const axis = (k) => pts.map((p) => p[k]).sort((a, b) => a - b);
  const xs = axis(0);
  const ys = axis(1);
  let [x0, x1, y0, y1] = [quantile(xs, 0.005), quantile(xs, 0.995),
    quantile(ys, 0.005), quantile(ys, 0.995)];
  if (!state.info.discrete) {  // show the prior's bulk too: decoding there is meaningful
    x0 = Math.min(x0, -3); x1 = Math.max(x1, 3); y0 = Math.min(y0, -3); y1 = Math.max(y1, 3);
  }
  const padX = Math.max(x1 - x0, 0.1) * 0.06;
  const padY = Math.max(y1 - y0, 0.1) * 0.06;
  state.view = {x0: x0 - padX, x1: x1 + padX, y0: y0 - padY, y1: y1 + padY};
}

function toCanvas(uv) {
  const v = state.view;
  return [(uv[0] - v.x0) / (v.x1 - v.x0) * canvas.width,
    canvas.height - (uv[1] - v.y0) / (v.y1 - v.y0) * canvas.height];
}

function fromEvent(ev) {
  const rect = canvas.getBoundingClientRect();
  const px = (ev.clientX - rect.left) * canvas.width / rect.width;
  const py = (ev.clientY - rect.top) * canvas.height / rect.height;
  const v = state.view;
  return [v.x0 + px / canvas.width * (v.x1 - v.x0),
    v.y0 + (canvas.height - py) / canvas.height * (v.y1 - v.y0)];
}

// -- drawing -----------------------------------------------------------------------------
function colorOf(label) {
  if (label === null || label === undefined) return PALETTE[0];
  if (!state.classColor.has(label)) {
    state.classColor.set(label, PALETTE[state.classColor.size % PALETTE.length]);
  }
  return state.classColor.get(label);
}

function buildLayer() {
  const layer = document.createElement("canvas");
  layer.width = canvas.width;
  layer.height = canvas.height;
  const g = layer.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, layer.width, layer.height);
  g.strokeStyle = "#e5e5e5";
  const [ox, oy] = toCanvas([0, 0]);
  g.beginPath();
  g.moveTo(ox, 0); g.lineTo(ox, layer.height); g.moveTo(0, oy); g.lineTo(layer.width, oy);
  g.stroke();
  const labels = state.info.labels;
  g.globalAlpha = 0.7;
  state.info.points.forEach((p, i) => {
    const [x, y] = toCanvas(p);
    g.fillStyle = colorOf(labels ? labels[i] : null);
    g.beginPath();
    g.arc(x, y, 2.2, 0, 2 * Math.PI);
    g.fill();
  });
  state.layer = layer;
}

function marker(uv, color, text) {
  const [x, y] = toCanvas(uv);
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.arc(x, y, 6, 0, 2 * Math.PI);
  ctx.stroke();
  if (text) {
    ctx.fillStyle = color;
    ctx.font = "bold 13px system-ui";
    ctx.fillText(text, x + 8, y - 8);
  }
}

function draw() {
  ctx.drawImage(state.layer, 0, 0);
  if (state.ends.length === 2) {
    const [a, b] = state.ends.map((e) => toCanvas(project(e.z)));
    ctx.strokeStyle = "#333";
    ctx.setLineDash([4, 3]);
    ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
    ctx.setLineDash([]);
  }
  state.ends.forEach((e, i) => marker(project(e.z), "#000", i === 0 ? "A" : "B"));
  if (state.z) marker(project(state.z), "#d00", "");
}

// -- controls ----------------------------------------------------------------------------
function showCoords() {
  const z = state.z;
  const fmt = (v) => v.toFixed(2);
  $("coords").textContent = z.length <= 8 ? `z = [${z.map(fmt).join(", ")}]`
    : `plane (${project(z).map(fmt).join(", ")}), |z| = ${Math.hypot(...z).toFixed(2)}`;
}

function buildSliders() {
  const box = $("sliders");
  box.innerHTML = "";
  const info = state.info;
  box.hidden = info.discrete || info.flat_dim <= 2;
  if (box.hidden) return;
  const note = document.createElement("p");
  note.className = "muted small";
  note.textContent = "each dimension, ±3 around the chosen point (click to choose)";
  box.appendChild(note);
  for (let d = 0; d < info.flat_dim; d++) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "range";
    input.step = "0.01";
    input.dataset.dim = String(d);
    const value = document.createElement("span");
    value.className = "mono";
    input.addEventListener("input", () => {
      state.z[d] = parseFloat(input.value);
      value.textContent = state.z[d].toFixed(2);
      afterChange();
    });
    label.append(`z${d}`, input, value);
    box.appendChild(label);
  }
  centerSliders();
}

function centerSliders() {
  const limit = state.info.limit;
  document.querySelectorAll("#sliders input").forEach((input) => {
    const d = parseInt(input.dataset.dim, 10);
    input.min = String(Math.max(-limit, state.anchor[d] - 3));
    input.max = String(Math.min(limit, state.anchor[d] + 3));
  });
  syncSliders();
}

function syncSliders() {
  document.querySelectorAll("#sliders input").forEach((input) => {
    const d = parseInt(input.dataset.dim, 10);
    input.value = String(state.z[d]);
    input.nextSibling.textContent = state.z[d].toFixed(2);
  });
}

function buildPickers() {
  const box = $("pickers");
  box.innerHTML = "";
  const info = state.info;
  box.hidden = !info.discrete;
  if (box.hidden) return;
  const [n, c] = info.categorical ? info.latent_shape : [info.latent_shape[0], 2];
  for (let v = 0; v < n; v++) {
    const label = document.createElement("label");
    let input;
    if (info.categorical) {
      input = document.createElement("select");
      for (let k = 0; k < c; k++) input.add(new Option(String(k), String(k)));
      input.addEventListener("change", () => {
        for (let k = 0; k < c; k++) state.z[v * c + k] = k === parseInt(input.value, 10) ? 1 : 0;
        afterChange();
      });
    } else {
      input = document.createElement("input");
      input.type = "checkbox";
      input.addEventListener("change", () => { state.z[v] = input.checked ? 1 : 0; afterChange(); });
    }
    input.dataset.var = String(v);
    label.append(`z${v}`, input);
    box.appendChild(label);
  }
  syncPickers();
}

function syncPickers() {
  const info = state.info;
  if (!info.discrete) return;
  document.querySelectorAll("#pickers [data-var]").forEach((input) => {
    const v = parseInt(input.dataset.var, 10);
    if (info.categorical) {
      const c = info.latent_shape[1];
      const probs = state.z.slice(v * c, (v + 1) * c);
      input.value = String(probs.indexOf(Math.max(...probs)));
    } else {
      input.checked = state.z[v] > 0.5;
    }
  });
}

function afterChange() {
  showCoords();
  draw();
  requestDecode(state.z);
}

function showEnds() {
  const names = ["first", "second"];
  $("ends").textContent = state.ends.length === 2 ? "A → B (click again to start over)"
    : `click a ${names[state.ends.length]} point`;
}

// -- events ------------------------------------------------------------------------------
canvas.addEventListener("pointermove", (ev) => {
  if (!state.info) return;
  state.z = codeAt(fromEvent(ev));
  syncSliders();
  syncPickers();
  afterChange();
});

canvas.addEventListener("click", (ev) => {
  if (!state.info) return;
  const z = codeAt(fromEvent(ev));
  if (state.ends.length >= 2) {
    state.ends = [];
    $("strip-box").hidden = true;
  }
  state.ends.push({z});
  state.z = z.slice();
  if (!state.info.discrete) {
    state.anchor = z.slice();
    centerSliders();
  }
  showEnds();
  afterChange();
  requestInterpolation();
});

$("mode").addEventListener("change", requestInterpolation);
$("steps").addEventListener("change", requestInterpolation);
$("clear").addEventListener("click", () => {
  state.ends = [];
  $("strip-box").hidden = true;
  showEnds();
  draw();
});
$("run-select").addEventListener("change", (ev) => load(ev.target.value));

// -- start -------------------------------------------------------------------------------
async function load(run) {
  try {
    const info = await api("/api/info" + (run ? `?run=${encodeURIComponent(run)}` : ""));
    state.info = info;
    state.classColor = new Map();
    state.ends = [];
    const select = $("run-select");
    if (info.runs.length > 1 && select.options.length === 0) {
      info.runs.forEach((name) => select.add(new Option(name, name)));
    }
    select.value = info.run;
    $("run-picker").hidden = info.runs.length < 2;
    const shape = info.latent_shape.join("×");
    $("summary").textContent = `${info.run}: ${info.family} latent (${shape}), ` +
      `${info.points.length} ${info.split} points of ${info.dataset}`;
    $("axes").textContent = `axes: ${info.projection.axis_labels.join(" vs ")}` +
      (info.projection.kind === "pca" ? " (other directions: the chosen point's)" : "");
    $("mode").querySelector("option[value=slerp]").disabled = info.discrete;
    if (info.discrete) $("mode").value = "linear";
    $("steps").max = String(info.max_steps);
    $("strip-box").hidden = true;
    computeView();
    const labels = info.labels ? [...new Set(info.labels)].sort((a, b) => a - b) : [];
    labels.forEach(colorOf);
    $("legend").innerHTML = "";
    labels.forEach((label) => {
      const span = document.createElement("span");
      span.textContent = String(label);
      span.style.setProperty("--c", colorOf(label));
      $("legend").appendChild(span);
    });
    buildLayer();
    state.anchor = info.discrete ? null : info.projection.center.slice();
    state.z = info.discrete ? info.codes[0].slice() : lift([0, 0], state.anchor);
    if (!info.discrete) state.anchor = state.z.slice();
    buildSliders();
    buildPickers();
    showEnds();
    afterChange();
  } catch (err) {
    setStatus(`could not load the run: ${err.message}`, true);
  }
}

load(null);
