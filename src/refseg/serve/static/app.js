// refseg web page: image in, phrase or box/points out to POST /v1/segment, masks drawn from
// the returned COCO RLE. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

// Same instance colours as refseg.render.PALETTE (Okabe-Ito, then Tableau).
const PALETTE = [
  [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178],
  [213, 94, 0], [204, 121, 167], [148, 103, 189], [140, 86, 75], [188, 189, 34],
];
const colorOf = (i) => PALETTE[i % PALETTE.length];
const css = ([r, g, b], a = 1) => `rgba(${r}, ${g}, ${b}, ${a})`;

// ---------------------------------------------------------------------------------------------
// COCO RLE. A mask of H x W is a list of run lengths over the pixels in column-major order,
// starting with a run of zeros. The compressed "counts" string stores each run as 5-bit groups
// (low bits first) offset by 48, bit 0x20 meaning "more groups follow" and bit 0x10 of the last
// group the sign; from the third run on, the stored value is the difference to the run two
// places earlier (pycocotools' rleToString / rleFrString).

/** Compressed counts string -> array of run lengths. */
function rleCounts(s) {
  const counts = [];
  let p = 0;
  while (p < s.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1;
      k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

/** COCO RLE ({size: [h, w], counts: string | number[]}) -> row-major Uint8Array of 0/1. */
function decodeRle(rle) {
  const [h, w] = rle.size;
  const counts = typeof rle.counts === "string" ? rleCounts(rle.counts) : rle.counts;
  const out = new Uint8Array(h * w);
  let index = 0;
  for (let r = 0; r < counts.length; r += 1) {
    const run = counts[r];
    if (r % 2 === 1) {
      // A run of ones, walked down columns: (index -> x = index / h, y = index % h).
      let x = Math.floor(index / h), y = index - x * h;
      for (let n = 0; n < run; n += 1) {
        out[y * w + x] = 1;
        y += 1;
        if (y === h) { y = 0; x += 1; }
      }
    }
    index += run;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
const $ = (id) => document.getElementById(id);
const el = {
  server: $("server"), stage: $("stage"), drop: $("drop"), view: $("view"), canvas: $("canvas"),
  busy: $("busy"), busyText: $("busy-text"), hint: $("hint"), file: $("file"),
  sample: $("sample"), sample2: $("sample2"), imageInfo: $("image-info"),
  phraseForm: $("phrase-form"), phrase: $("phrase"), think: $("think"), segment: $("segment"),
  answerPath: $("answer-path"),
  phraseNote: $("phrase-note"), clear: $("clear"), promptInfo: $("prompt-info"),
  resultCard: $("result-card"), timing: $("timing"), messages: $("messages"),
  instances: $("instances"), reasoningBox: $("reasoning-box"), reasoning: $("reasoning"),
  rawBox: $("raw-box"), raw: $("raw"), opacity: $("opacity"), showPrompts: $("show-prompts"),
  minScore: $("min-score"), minScoreValue: $("min-score-value"),
  dlMask: $("dl-mask"), dlLabels: $("dl-labels"), dlJson: $("dl-json"), dlOverlay: $("dl-overlay"),
  keyCard: $("key-card"), apiKey: $("api-key"),
};
const ctx = el.canvas.getContext("2d");

const state = {
  health: null,
  blob: null, // the image as uploaded
  name: "image",
  img: null, // decoded HTMLImageElement
  width: 0,
  height: 0,
  box: null, // [x1, y1, x2, y2] the user drew
  points: [], // [x, y, label]
  drag: null, // {x0, y0, x1, y1, moved}
  result: null, // last response body
  masks: [], // decoded Uint8Array per instance
  hidden: new Set(), // instances switched off by hand
  layer: null, // offscreen canvas with the coloured masks
  outlinesDrawn: 0, // path outlines stroked so far (the browser test reads it)
  seq: 0,
};
window.refseg = { decodeRle, rleCounts, state, render: () => render() };

function setState(name) { document.body.dataset.state = name; }

// --- server status ----------------------------------------------------------------------------
async function pollHealth() {
  let delay = 2000;
  try {
    const response = await fetch("/healthz", { cache: "no-store" });
    const body = await response.json();
    state.health = body;
    const bits = [];
    if (body.status === "ready") {
      bits.push(`ready · ${body.segmenter}`);
      bits.push(body.grounder ? `grounder ${body.grounder}` : "no grounder: boxes & points only");
      delay = 0;
    } else if (body.status === "failed") {
      bits.push(`models failed to load: ${body.error}`);
      delay = 0;
    } else {
      bits.push(`loading ${body.grounder ? "models" : body.segmenter}…`);
    }
    el.server.textContent = bits.join(" · ");
    el.server.title = bits.join("\n");
    el.server.dataset.state = body.status;
    el.keyCard.hidden = !body.auth_required;
    updatePhraseAvailability();
  } catch (error) {
    el.server.textContent = "server unreachable";
    el.server.dataset.state = "offline";
    delay = 4000;
  }
  if (delay) setTimeout(pollHealth, delay);
}

function hasGrounder() {
  return Boolean(state.health && state.health.grounder);
}

function updatePhraseAvailability() {
  const ok = hasGrounder();
  el.phrase.disabled = !ok;
  el.think.disabled = !ok;
  el.answerPath.disabled = !ok;
  el.segment.disabled = !ok || !state.blob;
  el.phraseNote.hidden = ok || !state.health;
  el.phraseNote.textContent = "This server was started without a grounder, so it takes boxes and "
    + "points only: draw on the image. (Start it with --grounder to type phrases.)";
}

// --- image loading ----------------------------------------------------------------------------
async function loadBlob(blob, name) {
  if (!blob.type.startsWith("image/") && blob.type !== "") {
    showError(`${name} is not an image (${blob.type}).`);
    return;
  }
  const url = URL.createObjectURL(blob);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch (error) {
    URL.revokeObjectURL(url);
    // The browser may not show every format the server reads (TIFF, 16-bit PNG): say so.
    showError(`This browser cannot display ${name}; the server may still read it, but the page `
      + "needs to show it. Try a JPEG or PNG.");
    return;
  }
  Object.assign(state, {
    blob, name, img, width: img.naturalWidth, height: img.naturalHeight,
    box: null, points: [], result: null, masks: [], hidden: new Set(), layer: null,
  });
  el.canvas.width = state.width;
  el.canvas.height = state.height;
  el.drop.hidden = true;
  el.view.hidden = false;
  el.hint.hidden = false;
  el.resultCard.hidden = true;
  el.imageInfo.textContent = `${name} · ${state.width} × ${state.height} px · ${formatBytes(blob.size)}`;
  updatePhraseAvailability();
  updatePromptInfo();
  setState("ready");
  render();
  if (hasGrounder() && el.phrase.value.trim()) el.phrase.focus();
}

async function loadSample() {
  const response = await fetch("/sample.jpg");
  if (!response.ok) { showError("The sample image is missing on the server."); return; }
  await loadBlob(await response.blob(), "astronaut.jpg");
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// --- drawing ----------------------------------------------------------------------------------
function lineScale() {
  const shown = el.canvas.getBoundingClientRect().width || state.width;
  return state.width / shown; // image pixels per CSS pixel
}

// The score threshold of the slider (0-1): instances below it are hidden like unticked ones.
function minScore() { return Number(el.minScore.value) / 100; }
function shown(i) {
  const inst = state.result && state.result.instances[i];
  return !state.hidden.has(i) && (!inst || inst.score >= minScore());
}

function buildLayer() {
  const { width: w, height: h } = state;
  const alpha = Math.round((Number(el.opacity.value) / 100) * 255);
  const layer = document.createElement("canvas");
  layer.width = w;
  layer.height = h;
  const lctx = layer.getContext("2d");
  const image = lctx.createImageData(w, h);
  const data = image.data;
  state.masks.forEach((mask, i) => {
    if (!shown(i) || mask.length !== w * h) return;
    const [r, g, b] = colorOf(i);
    for (let y = 0; y < h; y += 1) {
      const row = y * w;
      for (let x = 0; x < w; x += 1) {
        const k = row + x;
        if (!mask[k]) continue;
        // Outline pixels (a neighbour outside the mask) are drawn opaque.
        const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1
          || !mask[k - 1] || !mask[k + 1] || !mask[k - w] || !mask[k + w];
        const o = k * 4;
        data[o] = r; data[o + 1] = g; data[o + 2] = b;
        data[o + 3] = edge ? 255 : alpha;
      }
    }
  });
  lctx.putImageData(image, 0, 0);
  state.layer = layer;
}

function render() {
  if (!state.img) return;
  ctx.clearRect(0, 0, state.width, state.height);
  ctx.drawImage(state.img, 0, 0);
  if (state.layer) ctx.drawImage(state.layer, 0, 0);
  const s = lineScale();
  if (state.result) {
    // Path answers: each instance's outline (SVG path data in image pixels) over its mask.
    state.result.instances.forEach((inst, i) => {
      if (inst.path && shown(i)) drawOutline(inst.path, css(colorOf(i)), 2 * s);
    });
  }
  if (el.showPrompts.checked && state.result) {
    state.result.instances.forEach((inst, i) => {
      if (!shown(i)) return;
      if (inst.box) drawBox(inst.box, css(colorOf(i)), 2 * s, []);
      // point_labels: 1 foreground, 0 background (absent from older servers: all foreground).
      inst.points.forEach(([x, y], k) => drawPoint(x, y, inst.point_labels ? inst.point_labels[k] : 1, s, colorOf(i)));
    });
  }
  if (state.box) drawBox(state.box, "rgba(255,255,255,0.95)", 2 * s, [6 * s, 4 * s]);
  for (const [x, y, label] of state.points) drawPoint(x, y, label, s);
  if (state.drag && state.drag.moved) {
    const { x0, y0, x1, y1 } = state.drag;
    drawBox([x0, y0, x1, y1], "rgba(255,255,255,0.95)", 2 * s, [6 * s, 4 * s]);
  }
}

function drawBox([x1, y1, x2, y2], color, width, dash) {
  ctx.save();
  ctx.setLineDash(dash);
  ctx.lineWidth = width + 2 * lineScale();
  ctx.strokeStyle = "rgba(0,0,0,0.45)";
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.lineWidth = width;
  ctx.strokeStyle = color;
  ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  ctx.restore();
}

function drawOutline(data, color, width) {
  let shape;
  try { shape = new Path2D(data); } catch (err) { return; } // a path the browser cannot read
  ctx.save();
  ctx.lineJoin = "round";
  ctx.lineWidth = width + 2 * lineScale();
  ctx.strokeStyle = "rgba(0,0,0,0.55)";
  ctx.stroke(shape);
  ctx.lineWidth = width;
  ctx.strokeStyle = color;
  ctx.stroke(shape);
  ctx.restore();
  state.outlinesDrawn += 1;
}

function drawPoint(x, y, label, s, ring) {
  ctx.save();
  ctx.beginPath();
  ctx.arc(x, y, 6 * s, 0, 2 * Math.PI);
  ctx.fillStyle = label ? "#3cdc3c" : "#ff4d4d";
  ctx.fill();
  ctx.lineWidth = 2 * s;
  ctx.strokeStyle = ring ? css(ring) : "#111";
  ctx.stroke();
  if (!label) {
    ctx.beginPath();
    ctx.moveTo(x - 3 * s, y);
    ctx.lineTo(x + 3 * s, y);
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  ctx.restore();
}

// --- prompting with the mouse -----------------------------------------------------------------
function toImage(event) {
  const rect = el.canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * state.width;
  const y = ((event.clientY - rect.top) / rect.height) * state.height;
  return [Math.min(Math.max(x, 0), state.width), Math.min(Math.max(y, 0), state.height)];
}

el.canvas.addEventListener("contextmenu", (event) => event.preventDefault());
el.canvas.addEventListener("pointerdown", (event) => {
  if (!state.img) return;
  el.canvas.setPointerCapture(event.pointerId);
  const [x, y] = toImage(event);
  state.drag = {
    x0: x, y0: y, x1: x, y1: y, moved: false, sx: event.clientX, sy: event.clientY,
    background: event.shiftKey || event.button === 2 || event.altKey,
  };
});
el.canvas.addEventListener("pointermove", (event) => {
  if (!state.drag) return;
  const [x, y] = toImage(event);
  Object.assign(state.drag, { x1: x, y1: y });
  if (Math.hypot(event.clientX - state.drag.sx, event.clientY - state.drag.sy) > 4) {
    state.drag.moved = true;
  }
  render();
});
el.canvas.addEventListener("pointerup", (event) => {
  const drag = state.drag;
  state.drag = null;
  if (!drag) return;
  if (drag.moved) {
    const box = [
      Math.min(drag.x0, drag.x1), Math.min(drag.y0, drag.y1),
      Math.max(drag.x0, drag.x1), Math.max(drag.y0, drag.y1),
    ].map((v) => Math.round(v * 10) / 10);
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { render(); return; }
    state.box = box;
  } else {
    state.points.push([Math.round(drag.x0 * 10) / 10, Math.round(drag.y0 * 10) / 10,
      drag.background ? 0 : 1]);
  }
  promptsChanged();
});
el.canvas.addEventListener("pointercancel", () => { state.drag = null; render(); });

function updatePromptInfo() {
  const fg = state.points.filter((p) => p[2] === 1).length;
  const bg = state.points.length - fg;
  const parts = [];
  if (state.box) parts.push(`box [${state.box.map((v) => Math.round(v)).join(", ")}]`);
  if (fg) parts.push(`${fg} foreground point${fg > 1 ? "s" : ""}`);
  if (bg) parts.push(`${bg} background point${bg > 1 ? "s" : ""}`);
  el.promptInfo.textContent = parts.length ? parts.join(" · ") : "No prompts.";
  el.clear.disabled = !parts.length;
}

function promptsChanged() {
  updatePromptInfo();
  render();
  if (!state.box && !state.points.some((p) => p[2] === 1)) {
    if (state.points.length) showMessages([["info", "Add a foreground point", "Background points need a box or a foreground point."]]);
    return;
  }
  segment({ prompts: true });
}

function clearPrompts() {
  state.box = null;
  state.points = [];
  updatePromptInfo();
  render();
}

// --- requests ---------------------------------------------------------------------------------
function authHeaders() {
  const key = el.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function segment({ prompts }) {
  if (!state.blob) return;
  const form = new FormData();
  form.append("image", state.blob, state.name);
  let label;
  if (prompts) {
    if (state.box) form.append("box", state.box.join(","));
    for (const p of state.points) form.append("point", p.join(","));
    label = "prompts";
  } else {
    const phrase = el.phrase.value.trim();
    if (!phrase) { el.phrase.focus(); return; }
    form.append("phrase", phrase);
    if (el.think.checked) form.append("think", "true");
    if (el.answerPath && el.answerPath.checked) form.append("answer", "path");
    label = `“${phrase}”`;
  }
  const seq = ++state.seq;
  setBusy(true, el.think.checked && !prompts ? "Thinking…" : "Segmenting…");
  try {
    for (let attempt = 0; ; attempt += 1) {
      const started = performance.now();
      const response = await fetch("/v1/segment", { method: "POST", body: form, headers: authHeaders() });
      const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      if (seq !== state.seq) return; // a newer request superseded this one
      if (response.status === 503 && attempt < 3) {
        const wait = Number(response.headers.get("Retry-After") || 1);
        setBusy(true, `Server busy, retrying in ${wait} s…`);
        await new Promise((resolve) => setTimeout(resolve, wait * 1000));
        continue;
      }
      if (!response.ok) {
        const hint = response.status === 401 ? " Enter the API key below." : "";
        showError(`${body.error || `HTTP ${response.status}`}${hint}`, response.status);
        if (response.status === 401) el.keyCard.hidden = false;
        return;
      }
      showResult(body, label, performance.now() - started);
      return;
    }
  } catch (error) {
    if (seq === state.seq) showError(`Request failed: ${error.message}`);
  } finally {
    if (seq === state.seq) setBusy(false);
  }
}

function setBusy(busy, text) {
  el.busy.hidden = !busy;
  if (text) el.busyText.textContent = text;
  if (busy) setState("busy");
}

// --- results ----------------------------------------------------------------------------------
function showResult(body, label, elapsedMs) {
  state.result = body;
  state.hidden = new Set();
  state.masks = body.instances.map((inst) => decodeRle(inst.mask));
  if (body.image.width !== state.width || body.image.height !== state.height) {
    showError(`The server read the image as ${body.image.width} × ${body.image.height}, the `
      + `browser as ${state.width} × ${state.height}; masks may not line up.`);
  }
  buildLayer();
  el.resultCard.hidden = false;

  const messages = [];
  if (body.parse_error) {
    messages.push(["warn", "The model's answer could not be read", body.parse_error]);
  } else if (body.no_target) {
    messages.push(["info", "No target", `Nothing in the image matches ${label}.`]);
  } else if (!body.instances.length) {
    messages.push(["info", "No mask", "The request produced no instance."]);
  }
  if (body.no_target_score !== null && body.no_target_score !== undefined) {
    messages.push(["info", "No-target score", `The grounder gave "nothing matches" `
      + `${body.no_target_score.toFixed(3)} where it chose between nothing and objects.`]);
  }
  showMessages(messages);

  el.instances.replaceChildren(...body.instances.map((inst, i) => instanceRow(inst, i)));
  el.instances.dataset.count = String(body.instances.length);

  el.reasoningBox.hidden = !body.reasoning;
  el.reasoning.textContent = body.reasoning || "";
  el.rawBox.hidden = !body.raw_answer;
  el.raw.textContent = body.raw_answer || "";
  el.rawBox.open = Boolean(body.parse_error);

  const t = body.timings || {};
  const ms = (seconds) => `${Math.round(seconds * 1000)} ms`;
  const parts = [`${Math.round(elapsedMs)} ms in all`];
  if (t.ground_s !== undefined) parts.push(`grounding ${ms(t.ground_s)}`);
  if (t.embed_s !== undefined) parts.push(`image encoding ${ms(t.embed_s)}`);
  else if (body.embedding_cached) parts.push("image encoding reused");
  if (t.predict_s !== undefined) parts.push(`masks ${ms(t.predict_s)}`);
  el.timing.textContent = parts.join(" · ");
  el.timing.title = JSON.stringify(t, null, 1);
  setState(body.instances.length ? "done" : "empty-result");
  applyThreshold();
}

// The slider hides instances below it (rows dimmed, masks and outlines not drawn); the result
// JSON keeps them all, as the server sent it.
function applyThreshold() {
  el.minScoreValue.textContent = minScore().toFixed(2);
  if (!state.result) return;
  [...el.instances.children].forEach((li, i) => {
    li.classList.toggle("below", state.result.instances[i].score < minScore());
  });
  buildLayer();
  render();
}

function instanceRow(inst, i) {
  const li = document.createElement("li");
  const toggle = document.createElement("input");
  toggle.type = "checkbox";
  toggle.checked = true;
  toggle.title = "Show this mask";
  toggle.addEventListener("change", () => {
    if (toggle.checked) state.hidden.delete(i); else state.hidden.add(i);
    li.classList.toggle("off", !toggle.checked);
    buildLayer();
    render();
  });
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = css(colorOf(i));
  const name = document.createElement("span");
  const area = state.masks[i].reduce((a, v) => a + v, 0);
  const share = (100 * area) / (state.width * state.height);
  name.textContent = `#${i + 1} · ${area.toLocaleString()} px (${share.toFixed(1)}%)`;
  const meta = document.createElement("span");
  meta.className = "meta";
  meta.textContent = `score ${inst.score.toFixed(3)}`;
  // Each source's own score: the grounder's token probability and the mask's predicted IoU.
  const sources = inst.scores || {};
  const parts = [["grounder", sources.grounder], ["mask IoU", sources.segmenter]]
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([name, v]) => `${name} ${v.toFixed(3)}`);
  const detail = parts.length ? parts.join(" × ") : "no score source";
  meta.title = inst.box
    ? `${detail}; box [${inst.box.map((v) => v.toFixed(1)).join(", ")}]` : detail;
  li.append(toggle, swatch, name, meta);
  return li;
}

function showMessages(items) {
  el.messages.replaceChildren(...items.map(([kind, title, text]) => {
    const div = document.createElement("div");
    div.className = `message ${kind}`;
    const b = document.createElement("b");
    b.textContent = title;
    div.append(b, document.createTextNode(text));
    return div;
  }));
}

function showError(text, status) {
  el.resultCard.hidden = false;
  showMessages([["error", status ? `Error ${status}` : "Error", text]]);
  setState("error");
}

// --- downloads --------------------------------------------------------------------------------
function baseName() {
  return state.name.replace(/\.[^.]+$/, "") || "image";
}

function save(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 5000);
}

function grayPng(values, filename) {
  const { width: w, height: h } = state;
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const image = c.getContext("2d").createImageData(w, h);
  for (let k = 0; k < w * h; k += 1) {
    const v = values[k];
    image.data[4 * k] = v; image.data[4 * k + 1] = v; image.data[4 * k + 2] = v;
    image.data[4 * k + 3] = 255;
  }
  c.getContext("2d").putImageData(image, 0, 0);
  c.toBlob((blob) => save(blob, filename), "image/png");
}

el.dlMask.addEventListener("click", () => {
  const union = new Uint8Array(state.width * state.height);
  for (const mask of state.masks) for (let k = 0; k < union.length; k += 1) if (mask[k]) union[k] = 255;
  grayPng(union, `${baseName()}-mask.png`);
});
el.dlLabels.addEventListener("click", () => {
  const labels = new Uint8Array(state.width * state.height);
  state.masks.slice(0, 255).forEach((mask, i) => {
    for (let k = 0; k < labels.length; k += 1) if (mask[k]) labels[k] = i + 1;
  });
  grayPng(labels, `${baseName()}-instances.png`);
});
el.dlJson.addEventListener("click", () => {
  const { overlay_png: _o, mask_png: _m, ...result } = state.result;
  save(new Blob([JSON.stringify(result, null, 1)], { type: "application/json" }),
    `${baseName()}-result.json`);
});
el.dlOverlay.addEventListener("click", () => {
  el.canvas.toBlob((blob) => save(blob, `${baseName()}-overlay.png`), "image/png");
});

// --- wiring -----------------------------------------------------------------------------------
el.file.addEventListener("change", () => {
  const file = el.file.files[0];
  if (file) loadBlob(file, file.name);
  el.file.value = "";
});
el.sample.addEventListener("click", loadSample);
el.sample2.addEventListener("click", loadSample);
el.clear.addEventListener("click", clearPrompts);
el.phraseForm.addEventListener("submit", (event) => {
  event.preventDefault();
  clearPrompts();
  segment({ prompts: false });
});
el.opacity.addEventListener("input", () => { buildLayer(); render(); });
el.minScore.addEventListener("input", applyThreshold);
el.showPrompts.addEventListener("change", render);
el.apiKey.value = localStorage.getItem("refseg-api-key") || "";
$("key-form").addEventListener("submit", (event) => event.preventDefault());
el.apiKey.addEventListener("change", () => localStorage.setItem("refseg-api-key", el.apiKey.value.trim()));
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.activeElement !== el.phrase) clearPrompts();
});
window.addEventListener("resize", render);

for (const name of ["dragenter", "dragover"]) {
  el.stage.addEventListener(name, (event) => { event.preventDefault(); el.stage.classList.add("dragover"); });
}
for (const name of ["dragleave", "drop"]) {
  el.stage.addEventListener(name, (event) => { event.preventDefault(); el.stage.classList.remove("dragover"); });
}
el.stage.addEventListener("drop", (event) => {
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) loadBlob(file, file.name);
});

pollHealth();
