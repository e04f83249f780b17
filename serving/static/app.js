// CardSense web page: send each dropped or chosen card to POST /classify and show the answer.
// Plain JS, no build step, no network beyond this service.
//
// Cards are answered one at a time and listed in the order the files were given (first at the top, numbered).
// With a dual model loaded, a PNG and a CSV of the same name are one card and go together (fields file + series).
// Each answer shows the card with axes (m / kN from a CSV; relative for a PNG, which carries no units) and the
// input the model read: the filled card (image, dual) and/or the series (series, dual). A card the service calls
// unknown (not a card, or none of the twelve) reads as that first, its label only as "nearest of the twelve";
// answers to check by hand are marked with the rule that said so; the card's measures (with units), the
// runner-up and the condition's advice follow. With "explain" on, each card is sent with ?explain=1 and the
// heat map of where the model looked is drawn over the filled card (image, dual) and the card's plot (series, dual).
"use strict";

const TOKEN_KEY = "cardsense-token";
const SVG_NS = "http://www.w3.org/2000/svg";
const drop = document.getElementById("drop");
const input = document.getElementById("files");
const results = document.getElementById("results");
const template = document.getElementById("result-template");
const tokenBox = document.getElementById("token-box");
const tokenInput = document.getElementById("token");
const explainToggle = document.getElementById("explain");
let labels = null; // [{code, name, name_en}] from /model, in model order
let kinds = []; // loaded model kinds
let lowConfidence = 0.5; // the service's rule for answers to check by hand (/model service.low_confidence)
let counter = 0;
let queue = Promise.resolve(); // cards are sent one after the other, in the order given

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function pct(x) {
  return (100 * x).toFixed(1) + " %";
}

// ------------------------------------------------------------------------------------------ the header

function figureText(f) {
  return `${pct(f.accuracy)} on ${f.measured_on}`;
}

function modelLine(kind, model) {
  const line = document.createElement("p");
  line.className = "model-line";
  line.dataset.kind = kind;
  const name = document.createElement("span");
  name.className = "model-name";
  name.textContent = `${kind} model ${model.name} (${model.version})`;
  line.append(name);
  const figures = model.accuracy || [];
  if (!figures.length) {
    line.append(" · no accuracy recorded in its meta.json");
  }
  figures.forEach((f, i) => {
    const span = document.createElement("span");
    span.className = "figure" + (f.real_cards ? " real" : " simulated") + (i === 0 ? " first" : "");
    span.dataset.key = f.key;
    span.textContent = figureText(f);
    if (f.note) span.title = f.note;
    line.append(i === 0 ? " · " : " · also ", span);
  });
  return line;
}

async function loadModel() {
  const info = document.getElementById("model-info");
  try {
    const r = await fetch("/model", { headers: authHeaders() });
    if (r.status === 401) { tokenBox.hidden = false; info.textContent = "this service needs an API token"; return; }
    const m = await r.json();
    labels = m.labels;
    const models = m.models || { [m.model.kind || "image"]: { ...m.model, accuracy: m.accuracy } };
    kinds = Object.keys(models);
    if (m.service && typeof m.service.low_confidence === "number") lowConfidence = m.service.low_confidence;
    if (m.service && m.service.explain === "off") {
      // CARDSENSE_EXPLAIN=off: the service refuses ?explain=1, so the page does not offer it
      explainToggle.checked = false;
      explainToggle.disabled = true;
      explainToggle.parentElement.title = "explanations are turned off on this service (CARDSENSE_EXPLAIN=off)";
      explainToggle.parentElement.classList.add("muted");
    }
    info.replaceChildren();
    for (const kind of ["image", "series", "dual"].filter((k) => k in models)) {
      info.append(modelLine(kind, models[kind]));
    }
    const runtime = document.createElement("p");
    runtime.className = "muted";
    runtime.textContent = `on ${m.device.selected.toUpperCase()} · preprocessing ${m.preprocess.method} ` +
      `${m.preprocess.version} · accuracy on real cards first; hover a figure for how it was measured` +
      (kinds.includes("dual") ? " · a PNG and a CSV of the same name go to the dual model together" : "");
    info.append(runtime);
  } catch (e) {
    info.textContent = "cannot reach the model service: " + e;
  }
}

// ------------------------------------------------------------------------------------------ plots

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== null) node.textContent = text;
  return node;
}

function niceTicks(lo, hi, count = 5) {
  const span = hi - lo || Math.abs(hi) || 1;
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw) || 10 * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
  return { ticks, step };
}

function tickLabel(t, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return t.toFixed(Math.min(digits, 4));
}

// An SVG chart of width x height with axes, ticks and axis titles; returns {svg, x(v), y(v), box}.
function chart({ xRange, yRange, xLabel, yLabel, width = 420, height = 240 }) {
  const m = { left: 52, right: 10, top: 10, bottom: 40 };
  const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: "chart", role: "img" });
  const box = { x0: m.left, y0: m.top, x1: width - m.right, y1: height - m.bottom };
  const [xa, xb] = xRange;
  const [ya, yb] = yRange;
  const x = (v) => box.x0 + ((v - xa) / (xb - xa || 1)) * (box.x1 - box.x0);
  const y = (v) => box.y1 - ((v - ya) / (yb - ya || 1)) * (box.y1 - box.y0);
  svg.append(el("rect", { x: box.x0, y: box.y0, width: box.x1 - box.x0, height: box.y1 - box.y0, class: "frame" }));
  const xt = niceTicks(xa, xb);
  for (const t of xt.ticks) {
    svg.append(el("line", { x1: x(t), x2: x(t), y1: box.y1, y2: box.y1 + 4, class: "tick" }));
    svg.append(el("text", { x: x(t), y: box.y1 + 15, class: "tick-label", "text-anchor": "middle" }, tickLabel(t, xt.step)));
  }
  const yt = niceTicks(ya, yb, 4);
  for (const t of yt.ticks) {
    svg.append(el("line", { x1: box.x0 - 4, x2: box.x0, y1: y(t), y2: y(t), class: "tick" }));
    svg.append(el("text", { x: box.x0 - 6, y: y(t) + 4, class: "tick-label", "text-anchor": "end" }, tickLabel(t, yt.step)));
  }
  svg.append(el("text", { x: (box.x0 + box.x1) / 2, y: height - 6, class: "axis-title x-title", "text-anchor": "middle" }, xLabel));
  svg.append(el("text", { x: 12, y: (box.y0 + box.y1) / 2, class: "axis-title y-title", "text-anchor": "middle",
    transform: `rotate(-90 12 ${(box.y0 + box.y1) / 2})` }, yLabel));
  return { svg, x, y, box };
}

function polyline(c, xs, ys, cls, closed = false) {
  const points = xs.map((v, i) => `${c.x(v).toFixed(1)},${c.y(ys[i]).toFixed(1)}`).join(" ");
  c.svg.append(el(closed ? "polygon" : "polyline", { points, class: "line " + cls }));
}

function range(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  const pad = (hi - lo) * 0.04 || 1;
  return [lo - pad, hi + pad];
}

// A heat map (PNG data URL, transparent where nothing mattered) over part of a chart.
function heatmap(c, dataUrl, x0, y0, x1, y1) {
  c.svg.append(el("image", { href: dataUrl, x: Math.min(x0, x1), y: Math.min(y0, y1), width: Math.abs(x1 - x0),
    height: Math.abs(y1 - y0), preserveAspectRatio: "none", class: "heatmap" }));
}

function lo(values) { return values.reduce((a, b) => Math.min(a, b), Infinity); }
function hi(values) { return values.reduce((a, b) => Math.max(a, b), -Infinity); }

// The card from its CSV samples, in metres and kilonewtons; a series heat map spans the stroke's bounding box.
function samplesPlot(samples, heat) {
  const c = chart({ xRange: range(samples.position_m), yRange: range(samples.load_kN),
    xLabel: "position (m)", yLabel: "load (kN)" });
  polyline(c, samples.position_m, samples.load_kN, "card-line", true);
  if (heat) {
    heatmap(c, heat, c.x(lo(samples.position_m)), c.y(hi(samples.load_kN)), c.x(hi(samples.position_m)),
      c.y(lo(samples.load_kN)));
  }
  return c.svg;
}

// A picture (the PNG's outline, or the filled input) inside relative axes: a PNG carries no units. An image heat
// map is in the frame of the filled card the model read, so it covers that picture exactly.
function imagePlot(dataUrl, what, heat) {
  const c = chart({ xRange: [0, 1], yRange: [0, 1], xLabel: `position (relative, 0–1 of the ${what})`,
    yLabel: "load (relative)" });
  const img = el("image", { href: dataUrl, x: c.box.x0, y: c.box.y0, width: c.box.x1 - c.box.x0,
    height: c.box.y1 - c.box.y0, preserveAspectRatio: "none", class: "picture" });
  c.svg.insertBefore(img, c.svg.firstChild.nextSibling);
  if (heat) heatmap(c, heat, c.box.x0, c.box.y0, c.box.x1, c.box.y1);
  return c.svg;
}

// The series the network read: position and load (each scaled 0–1) against the sample index, in time order.
function seriesPlot(series) {
  const n = series.position.length;
  const index = Array.from({ length: n }, (_, i) => i);
  const c = chart({ xRange: [0, n - 1], yRange: [-0.04, 1.04], xLabel: `sample (${n}, in time order, upstroke first)`,
    yLabel: "scaled 0–1" });
  polyline(c, index, series.position, "position-line");
  polyline(c, index, series.load, "load-line");
  c.svg.append(el("text", { x: c.box.x1 - 4, y: c.box.y0 + 14, class: "legend position-legend", "text-anchor": "end" }, "position"));
  c.svg.append(el("text", { x: c.box.x1 - 4, y: c.box.y0 + 28, class: "legend load-legend", "text-anchor": "end" }, "load"));
  return c.svg;
}

function showFigures(article, body) {
  const card = article.querySelector(".card-figure");
  const explained = body.explanation || {};
  const imageHeat = explained.image ? explained.image.heatmap_png : null;
  const seriesHeat = explained.series ? explained.series.heatmap_png : null;
  if (body.card_samples) {
    card.querySelector(".plot").replaceChildren(samplesPlot(body.card_samples, seriesHeat));
    card.querySelector("figcaption").textContent = "the card, from its CSV" +
      (seriesHeat ? " · red: the load samples the answer rested on" : "");
  } else {
    card.querySelector(".plot").replaceChildren(imagePlot(body.card_png, "card"));
    card.querySelector("figcaption").textContent = "the card, as drawn in its PNG";
  }
  card.dataset.units = body.card_samples ? "m/kN" : "relative";
  const seen = article.querySelector(".input-figure");
  const plots = [];
  if (body.input_png) plots.push(imagePlot(body.input_png, "filled card", imageHeat));
  if (body.input_series) plots.push(seriesPlot(body.input_series));
  seen.querySelector(".plot").replaceChildren(...plots);
  const model = body.model.kind;
  seen.querySelector("figcaption").textContent =
    body.input_png && body.input_series ? `what the ${model} model read: the filled card and the series`
      : body.input_png ? `the filled card the ${model} model read`
        : `the series the ${model} model read (position and load, each scaled 0–1)`;
  if (imageHeat) seen.querySelector("figcaption").textContent += " · red: the regions the answer rested on";
  seen.dataset.shows = [body.input_png ? "image" : "", body.input_series ? "series" : ""].filter(Boolean).join("+");
  article.dataset.explained = [imageHeat ? "image" : "", seriesHeat ? "series" : ""].filter(Boolean).join("+");
}

// ------------------------------------------------------------------------------------------ facts

function fact(list, term, ...content) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.append(...content);
  list.append(dt, dd);
  return dd;
}

function span(cls, text) {
  const node = document.createElement("span");
  node.className = cls;
  node.textContent = text;
  return node;
}

const MEASURE_NAMES = [["fillage", "fillage"], ["peak_load", "peak load"], ["min_load", "min load"],
  ["load_range", "load range"], ["stroke", "stroke"], ["area", "work per stroke"], ["fullness", "fullness"]];

function measureText(name, m) {
  if (m.value === null) return "— (no load drop to read)";
  const unit = { "fraction of stroke": "of the stroke", kN: "kN", m: "m", kJ: "kJ" }[m.unit];
  if (name === "fillage") return `${(100 * m.value).toFixed(0)} % of the stroke`;
  if (unit) return `${m.value.toFixed(m.value >= 100 ? 0 : 2)} ${unit}`;
  return `${m.value.toFixed(3)} (${m.unit})`;
}

function showFacts(article, body) {
  const list = article.querySelector(".facts");
  list.replaceChildren();
  const second = body.top2[1];
  fact(list, "runner-up", `${second.label} ${second.name} ${second.name_en} · ${pct(second.probability)}`)
    .className = "second";
  const m = body.measures || {};
  const measures = fact(list, m.basis === "series" ? "measures (from the CSV)" : "measures (from the picture)");
  measures.className = "measures";
  if (m.error) {
    measures.textContent = m.error;
  } else {
    for (const [key, title] of MEASURE_NAMES) {
      if (!m[key]) continue;
      const item = span("measure", "");
      item.dataset.measure = key;
      item.append(span("measure-name", title + " "), span("measure-value", measureText(key, m[key])));
      measures.append(item);
    }
    if (m.basis === "outline") {
      measures.append(span("muted", " · a PNG carries no units: loads and lengths are fractions of the image"));
    }
  }
  const tip = body.advice;
  if (tip) {
    const details = document.createElement("details");
    details.open = !body.unknown; // for a card that is none of the twelve, the label's advice may not apply
    const summary = document.createElement("summary");
    summary.textContent = body.unknown ? `advice for ${body.label}, if it were one (it looks like none of the twelve)`
      : `likely cause and usual remedy of ${body.label}`;
    const cause = document.createElement("p");
    cause.className = "cause";
    cause.append(span("zh", tip.cause), " ", span("en", tip.cause_en));
    const remedy = document.createElement("p");
    remedy.className = "remedy";
    remedy.append(span("zh", tip.remedy), " ", span("en", tip.remedy_en));
    const sources = document.createElement("ul");
    sources.className = "sources muted";
    for (const source of tip.sources) sources.append(Object.assign(document.createElement("li"), { textContent: source }));
    details.append(summary, cause, remedy, sources);
    fact(list, "advice", details).className = "advice";
  }
  list.hidden = false;
}

function reviewWhy(rule) {
  if (!rule) return "";
  if (rule.rule === "meta") {
    return `(below the model's fitted thresholds: top ${pct(rule.min_top)}, margin ${pct(rule.min_margin)})`;
  }
  return `(confidence below ${pct(rule.min_top)})`;
}

// ------------------------------------------------------------------------------------------ answers

function showError(article, message) {
  article.classList.add("failed");
  const p = article.querySelector(".error");
  p.hidden = false;
  p.textContent = message;
}

function renderBars(container, body) {
  container.replaceChildren();
  const table = labels || Object.keys(body.probabilities).map((code) => ({ code, name: "", name_en: "" }));
  for (const lab of table) {
    const p = body.probabilities[lab.code] || 0;
    const row = document.createElement("div");
    row.className = "row" + (lab.code === body.label ? " best" : "");
    row.setAttribute("role", "listitem");
    row.style.display = "contents";
    const name = document.createElement("span");
    name.className = "code";
    name.textContent = `${lab.code} ${lab.name}`;
    name.title = lab.name_en;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = (100 * p).toFixed(2) + "%";
    track.appendChild(fill);
    const value = document.createElement("span");
    value.className = "pct";
    value.textContent = pct(p);
    row.append(name, track, value);
    container.appendChild(row);
  }
}

function needsReview(body) {
  return "review" in body ? Boolean(body.review) : body.confidence < lowConfidence;
}

function showUnknown(article, body) {
  const box = article.querySelector(".unknown");
  const unknown = Boolean(body.unknown);
  box.hidden = !unknown;
  article.classList.toggle("is-unknown", unknown);
  article.querySelector(".nearest").hidden = !unknown;
  article.dataset.unknown = String(unknown);
  const reasons = box.querySelector(".unknown-reasons");
  reasons.replaceChildren(...(body.unknown_reasons || []).map((r) => Object.assign(document.createElement("li"),
    { textContent: r })));
}

async function classify(card) {
  const article = template.content.firstElementChild.cloneNode(true);
  counter += 1;
  const title = card.csv && card.png ? `${card.png.name} + ${card.csv.name}` : (card.png || card.csv).name;
  article.querySelector(".number").textContent = `#${counter}`;
  article.querySelector(".file").textContent = title;
  article.dataset.file = title;
  article.dataset.number = String(counter);
  article.dataset.state = "pending";
  results.append(article); // oldest first: the list reads in the order the files were given
  const form = new FormData();
  if (card.png && card.csv) {
    form.append("file", card.png, card.png.name);
    form.append("series", card.csv, card.csv.name);
  } else {
    const file = card.png || card.csv;
    form.append("file", file, file.name);
  }
  let body;
  try {
    const explain = explainToggle.checked ? "&explain=1" : "";
    const r = await fetch(`/classify?include_input=1&top_k=3${explain}`, { method: "POST", body: form,
      headers: authHeaders() });
    body = await r.json();
    if (r.status === 401) tokenBox.hidden = false;
    if (!r.ok) {
      const err = body && body.error ? body.error : { code: r.status, message: r.statusText };
      showError(article, `${err.message} (${err.code}, HTTP ${r.status})`);
      article.dataset.state = "error";
      article.dataset.error = err.code;
      return;
    }
  } catch (e) {
    showError(article, "request failed: " + e);
    article.dataset.state = "error";
    return;
  }
  article.querySelector(".label").textContent = body.label;
  article.querySelector(".name-zh").textContent = body.name;
  article.querySelector(".name-en").textContent = body.name_en;
  article.querySelector(".confidence").textContent = `confidence ${pct(body.confidence)}`;
  const review = needsReview(body);
  article.querySelector(".review").hidden = !review;
  article.querySelector(".review-why").textContent = reviewWhy(body.review_rule);
  article.classList.toggle("unsure", review);
  article.dataset.review = String(review);
  showUnknown(article, body);
  showFigures(article, body);
  renderBars(article.querySelector(".bars"), body);
  if (body.top2) showFacts(article, body);
  article.querySelector(".meta").textContent =
    `read: ${body.input.kind.toUpperCase()} · answered by the ${body.model.kind} model ${body.model.name} ` +
    `${body.model.version} · ${body.elapsed_ms.toFixed(1)} ms`;
  article.dataset.state = "done";
  article.dataset.label = body.label;
  article.dataset.model = body.model.kind;
}

// The cards among the files, in the order given: with a dual model, a PNG and a CSV of one name are one card.
function cardsOf(files) {
  const cards = [];
  const byStem = new Map();
  for (const file of files) {
    const dot = file.name.lastIndexOf(".");
    const stem = dot > 0 ? file.name.slice(0, dot) : file.name;
    const ext = dot > 0 ? file.name.slice(dot + 1).toLowerCase() : "";
    const kind = ext === "csv" || file.type === "text/csv" ? "csv" : "png";
    const partner = kinds.includes("dual") ? byStem.get(stem) : undefined;
    if (partner && !partner[kind]) {
      partner[kind] = file;
      continue;
    }
    const card = { [kind]: file };
    cards.push(card);
    byStem.set(stem, card);
  }
  return cards;
}

function handleFiles(files) {
  const given = Array.from(files);
  // one at a time: keeps the order and the server load predictable; pairs need to know the models first
  queue = queue.then(() => modelInfo).then(async () => { for (const card of cardsOf(given)) await classify(card); });
  return queue;
}

input.addEventListener("change", () => { handleFiles(input.files); input.value = ""; });
// "explain" asks for heat maps with the next cards and shows (or hides) those already drawn.
function applyExplain() { document.body.classList.toggle("explaining", explainToggle.checked); }
explainToggle.addEventListener("change", applyExplain);
applyExplain();
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer && e.dataTransfer.files.length) handleFiles(e.dataTransfer.files);
});
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
document.getElementById("token-save").addEventListener("click", () => {
  sessionStorage.setItem(TOKEN_KEY, tokenInput.value.trim());
  tokenBox.hidden = true;
  modelInfo = loadModel();
});

let modelInfo = loadModel();
