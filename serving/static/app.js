// CardSense web page: send each dropped or chosen card to POST /classify and show the answer.
// Plain JS, no build step, no network beyond this service.
"use strict";

const TOKEN_KEY = "cardsense-token";
const drop = document.getElementById("drop");
const input = document.getElementById("files");
const results = document.getElementById("results");
const template = document.getElementById("result-template");
const tokenBox = document.getElementById("token-box");
const tokenInput = document.getElementById("token");
let labels = null; // [{code, name, name_en}] from /model, in model order

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function loadModel() {
  const info = document.getElementById("model-info");
  try {
    const r = await fetch("/model", { headers: authHeaders() });
    if (r.status === 401) { tokenBox.hidden = false; info.textContent = "this service needs an API token"; return; }
    const m = await r.json();
    labels = m.labels;
    const metrics = m.metrics || {};
    const accuracy = typeof metrics.accuracy === "number" ? metrics.accuracy : metrics.holdout_acc;
    const acc = typeof accuracy === "number" ? ` · holdout accuracy ${(100 * accuracy).toFixed(1)} %` : "";
    info.textContent = `model ${m.model.name} (${m.model.version}) on ${m.device.selected.toUpperCase()}` +
      ` · preprocessing ${m.preprocess.method} ${m.preprocess.version}${acc}`;
  } catch (e) {
    info.textContent = "cannot reach the model service: " + e;
  }
}

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
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * p).toFixed(1) + " %";
    row.append(name, track, pct);
    container.appendChild(row);
  }
}

async function classify(file) {
  const article = template.content.firstElementChild.cloneNode(true);
  article.querySelector(".file").textContent = file.name;
  article.dataset.file = file.name;
  article.dataset.state = "pending";
  results.prepend(article);
  const form = new FormData();
  form.append("file", file, file.name);
  let body;
  try {
    const r = await fetch("/classify?include_input=1&top_k=3", { method: "POST", body: form, headers: authHeaders() });
    body = await r.json();
    if (r.status === 401) tokenBox.hidden = false;
    if (!r.ok) {
      const err = body && body.error ? body.error : { code: r.status, message: r.statusText };
      showError(article, `${err.message} (${err.code}, HTTP ${r.status})`);
      article.dataset.state = "error";
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
  article.querySelector(".confidence").textContent = `confidence ${(100 * body.confidence).toFixed(1)} %`;
  article.querySelector("img.card").src = body.card_png;
  article.querySelector("img.input").src = body.input_png;
  renderBars(article.querySelector(".bars"), body);
  article.querySelector(".meta").textContent =
    `${body.input.kind.toUpperCase()} · ${body.model.name} ${body.model.version} · ${body.elapsed_ms.toFixed(1)} ms`;
  article.dataset.state = "done";
  article.dataset.label = body.label;
}

async function handleFiles(files) {
  for (const file of Array.from(files)) {
    await classify(file); // one at a time: keeps the order and the server load predictable
  }
}

input.addEventListener("change", () => { handleFiles(input.files); input.value = ""; });
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
  loadModel();
});

loadModel();
