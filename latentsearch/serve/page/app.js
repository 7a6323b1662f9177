// The latentsearch page: pick a collection, search it by text, image or id, click a result to
// see its neighbours, and read the collection's evaluate figures beside the results.
// Plain JavaScript, no build step, no library: every call goes to the JSON API of this server.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "latentsearch-token";
const BASELINE_NAMES = { chance: "chance", raw: "raw input, exact", pca: "PCA of raw input" };
// the served collections, the chosen one, the last query (to re-run), and a counter that lets
// only the newest search draw its answer
const state = { collections: [], current: null, last: null, seq: 0 };

// ---- the API ----------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function authHeaders() {
  return token() ? { Authorization: `Bearer ${token()}` } : {};
}

// GET `path`, or POST `body` as JSON; resolves to the JSON answer, rejects with an Error whose
// message is the server's {"error"} line (and asks for a token on a 401).
async function api(path, body) {
  const init = { headers: authHeaders() };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) $("token-form").hidden = false;
  if (!res.ok) {
    const err = new Error(data.error || `${res.status} ${res.statusText}`);
    err.type = data.type || `HTTP ${res.status}`;
    throw err;
  }
  return data;
}

function itemPath(id) {
  return `/collections/${encodeURIComponent(state.current.name)}/items/${id}`;
}

// An <img> of a stored item. With a token the picture is fetched with the header (an <img src>
// cannot send one) and shown from a blob URL.
function itemImage(id) {
  const img = el("img");
  img.alt = `item ${id}`;
  const path = `${itemPath(id)}/image.png`;
  if (!token()) {
    img.src = path;
    return img;
  }
  fetch(path, { headers: authHeaders() })
    .then((res) => (res.ok ? res.blob() : Promise.reject(new Error(res.statusText))))
    .then((blob) => {
      img.src = URL.createObjectURL(blob);
      img.onload = () => URL.revokeObjectURL(img.src);
    })
    .catch(() => (img.alt = "no image"));
  return img;
}

// ---- small DOM helpers -------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(err) {
  const box = $("error");
  box.textContent = err.type ? `${err.type}: ${err.message}` : String(err.message || err);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

function fmt(x) {
  if (x === null || x === undefined) return "-";
  return x !== 0 && Math.abs(x) < 0.01 ? x.toExponential(2) : x.toFixed(3);
}

// "label=3, source=a.png" or a JSON object -> the `where` object of the API (undefined if empty).
function parseFilter(text) {
  text = text.trim();
  if (!text) return undefined;
  if (text.startsWith("{")) {
    const where = JSON.parse(text);
    if (where === null || typeof where !== "object" || Array.isArray(where)) {
      throw new Error("the filter must be a JSON object");
    }
    return where;
  }
  const where = {};
  for (const part of text.split(/\s*,\s*|\s+(?=[A-Za-z_]\w*\s*=)/)) {
    const m = part.match(/^([A-Za-z_]\w*)\s*=\s*(.*)$/);
    if (!m) throw new Error(`filter: expected key=value, got "${part}"`);
    where[m[1]] = m[2];
  }
  return where;
}

// ---- collections -------------------------------------------------------------------------

async function start() {
  clearError();
  let collections;
  try {
    ({ collections } = await api("/collections"));
  } catch (err) {
    return showError(err);
  }
  const select = $("collection");
  select.replaceChildren(...collections.map((c) => new Option(c.name, c.name)));
  if (!collections.length) {
    return showError({ message: "this server serves no collection yet (latentsearch build ...)" });
  }
  state.collections = collections;
  const wanted = decodeURIComponent(location.hash.slice(1));
  select.value = collections.some((c) => c.name === wanted) ? wanted : collections[0].name;
  choose(select.value);
}

function choose(name) {
  const col = state.collections.find((c) => c.name === name);
  state.current = col;
  state.last = null;
  state.seq++; // a search still under way for the previous collection draws nothing
  history.replaceState(null, "", `${location.pathname}#${encodeURIComponent(name)}`);
  $("meta").textContent = `${col.modality} · ${col.count.toLocaleString()} items · ` +
    `${col.dim}-d ${col.metric} · ${col.index}`;
  $("text-form").hidden = col.modality !== "text";
  $("drop").hidden = col.modality !== "image";
  $("results").replaceChildren();
  $("results").removeAttribute("aria-busy");
  $("query").replaceChildren(el("span", "muted", hint(col.modality)));
  clearError();
  loadEvaluate(name);
}

function hint(modality) {
  const how = { text: "Type a query", image: "Drop an image", vectors: "Give an id" }[modality];
  return `${how || "Give an id"} to search ${state.current.name}; ` +
    "click any result to see its neighbours.";
}

// ---- searching ---------------------------------------------------------------------------

// Run one query: `query` is {text} | {image} | {id}; `asked` is what the page shows as the query.
async function search(query, asked) {
  const name = state.current.name;
  const body = { ...query, k: Number($("k").value) || 10 };
  try {
    const where = parseFilter($("filter").value);
    if (where) body.where = where;
  } catch (err) {
    return showError(err);
  }
  state.last = { query, asked };
  const seq = ++state.seq;
  clearError();
  $("query").replaceChildren(...asked);
  const grid = $("results");
  grid.setAttribute("aria-busy", "true");
  const t0 = performance.now();
  try {
    const { hits } = await api(`/collections/${encodeURIComponent(name)}/search`, body);
    if (seq === state.seq) showHits(hits, performance.now() - t0);
  } catch (err) {
    if (seq !== state.seq) return;
    grid.replaceChildren();
    showError(err);
  } finally {
    if (seq === state.seq) grid.removeAttribute("aria-busy");
  }
}

function showHits(hits, ms) {
  const images = state.current.modality === "image";
  const grid = $("results");
  grid.className = images ? "grid images" : "grid texts";
  grid.replaceChildren(...hits.map((hit) => hitCard(hit, images)));
  const count = ` · ${hits.length} results in ${Math.round(ms)} ms`;
  $("query").append(el("span", "muted count", count));
}

function hitCard(hit, images) {
  const card = el("button", "hit");
  card.type = "button";
  card.dataset.id = hit.id;
  card.title = `#${hit.id}: click for its neighbours`;
  if (images) card.append(itemImage(hit.id));
  else card.append(el("p", "snippet", hit.text || hit.source || `item ${hit.id}`));
  const caption = el("span", "caption");
  caption.append(el("b", null, `#${hit.id}`));
  if (hit.label != null) {
    const label = el("span", "label", hit.label);
    label.title = "label";
    caption.append(label);
  }
  else if (!images && hit.source) caption.append(el("span", "muted", hit.source));
  caption.append(el("span", "distance", `d ${fmt(hit.distance)}`));
  card.append(caption);
  card.addEventListener("click", () => searchId(hit.id));
  return card;
}

function searchId(id) {
  $("id").value = id;
  const asked = [el("span", null, "neighbours of "), el("b", "asked-id", `#${id}`)];
  if (state.current.modality === "image") {
    asked.unshift(itemImage(id));
  } else if (state.current.modality === "text") {
    const quote = el("q", "muted");
    asked.push(" ", quote);
    api(itemPath(id))
      .then((item) => (quote.textContent = (item.text || "").slice(0, 140)))
      .catch(() => {}); // the query line is only less informative
  }
  search({ id }, asked);
}

function searchText(text) {
  search({ text }, [el("span", null, "text "), el("q", "asked-text", text)]);
}

function searchFile(file) {
  const reader = new FileReader();
  reader.onload = () => {
    const preview = el("img");
    preview.src = reader.result;
    preview.alt = file.name;
    const asked = [preview, el("span", null, "image "), el("b", "asked-file", file.name)];
    search({ image: reader.result }, asked);
  };
  reader.onerror = () => showError({ message: `cannot read ${file.name}` });
  reader.readAsDataURL(file); // a data: URL, which the API takes as `image`
}

// ---- the claim: evaluate figures and agreement by distance -------------------------------

async function loadEvaluate(name) {
  const box = $("evaluate");
  box.replaceChildren(el("p", "muted", "measuring (once per version of the collection)…"));
  try {
    const report = await api(`/collections/${encodeURIComponent(name)}/evaluate`);
    if (state.current.name === name) box.replaceChildren(...claim(report));
  } catch (err) {
    if (state.current.name === name) box.replaceChildren(el("p", "error", err.message));
  }
}

function claim(r) {
  const out = [];
  if (r.agreement != null) {
    out.push(el("p", null, `agreement@${r.k}: the share of an item's ${r.k} nearest ` +
      `neighbours that carry its label (${r.n_queries.toLocaleString()} items sampled)`));
    const rows = [["latents (this index)", r.agreement, "ours"]];
    for (const [key, row] of Object.entries(r.baselines)) {
      rows.push([BASELINE_NAMES[key] || key, row.agreement, key]);
    }
    out.push(barTable(rows));
    out.push(el("h3", null, "agreement by distance"));
    out.push(el("p", "muted", "every item's nearest neighbours in ten equal bands, nearest first"));
    const chance = r.baselines.chance && r.baselines.chance.agreement;
    out.push(distanceBars(r.agreement_by_distance, chance));
  }
  const recall = `recall@${r.k} of the index against exact search: ${fmt(r.recall_vs_exact)}`;
  out.push(el("p", null, recall));
  for (const note of r.notes) out.push(el("p", "muted note", note));
  return out;
}

function barTable(rows) {
  const table = el("div", "bars");
  for (const [name, value, key] of rows) {
    const bar = el("span", `bar ${key}`);
    const fill = el("i");
    fill.style.width = `${Math.round(value * 100)}%`;
    bar.append(fill);
    table.append(el("span", "name", name), bar, el("span", "value", value.toFixed(3)));
  }
  return table;
}

function distanceBars(bands, chance) {
  const chart = el("div", "columns");
  chart.setAttribute("role", "img");
  chart.setAttribute("aria-label", "agreement by distance band: " +
    bands.map((b) => b.agreement.toFixed(2)).join(", "));
  for (const band of bands) {
    const col = el("i");
    col.style.height = `${Math.round(band.agreement * 100)}%`;
    col.title = `distance up to ${fmt(band.max_distance)}: agreement ${band.agreement.toFixed(3)}`;
    chart.append(col);
  }
  const axis = el("div", "axis");
  axis.append(el("span", null, "nearest"));
  if (chance) {
    const line = el("span", "chance");
    line.style.bottom = `${Math.round(chance * 100)}%`;
    chart.append(line);
    axis.append(el("span", "chance-key", `chance ${chance.toFixed(2)}`));
  }
  axis.append(el("span", null, "farthest"));
  const box = el("div", "chart");
  box.append(chart, axis);
  return box;
}

// ---- wiring ------------------------------------------------------------------------------

function wire() {
  $("collection").addEventListener("change", (e) => choose(e.target.value));
  $("text-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (text) searchText(text);
  });
  $("id-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if ($("id").value !== "") searchId(Number($("id").value));
  });
  $("options").addEventListener("submit", (e) => {
    e.preventDefault();
    if (state.last) search(state.last.query, state.last.asked);
  });
  $("image").addEventListener("change", (e) => {
    if (e.target.files[0]) searchFile(e.target.files[0]);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) searchFile(e.dataTransfer.files[0]);
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token-form").hidden = true;
    start();
  });
}

// Opened as /?token=T: keep T for this tab and take it out of the address bar.
const params = new URLSearchParams(location.search);
if (params.has("token")) {
  sessionStorage.setItem(TOKEN_KEY, params.get("token"));
  history.replaceState(null, "", location.pathname + location.hash);
}
wire();
start();
