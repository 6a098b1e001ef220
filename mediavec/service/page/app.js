// The mediavec search page: plain JavaScript over the service's own API (same origin).
// Whatever the API returns is written with textContent or as a validated attribute, never as markup.
"use strict";

const PAGE_SIZE = 24;
const POLL_MS = 2000;
const RATE_WINDOW = 6; // polls the ingest rate is averaged over (about 10 s)
const KEY_STORE = "mediavec.apiKey";
const COLLECTION_STORE = "mediavec.collection";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("search-form"), query: $("query"), collection: $("collection"), collections: $("collections"),
  space: $("space"), key: $("api-key"), drop: $("drop"), file: $("file"), preview: $("drop-preview"),
  error: $("error"), status: $("status"), results: $("results"), prev: $("prev"), next: $("next"),
  pageInfo: $("page-info"), card: $("card"), counterName: $("counter-collection"),
  points: $("counter-points"), rate: $("counter-rate"), live: $("live-dot"),
};

const state = {
  query: null, // {kind: "text"|"image"|"similar", text?, image?, id?, what}
  offset: 0,
  nextOffset: null,
  seq: 0, // answers to older requests are dropped
  blobUrls: [], // thumbnails of the shown page, revoked when the page changes
  samples: [], // [{t, points}] of the counters' collection
};

// -- the API ---------------------------------------------------------------------------------

class ApiFailure extends Error {}

function apiHeaders(extra) {
  const headers = new Headers(extra || {});
  const key = ui.key.value.trim();
  if (key) headers.set("X-API-Key", key);
  return headers;
}

async function api(path, options) {
  const opts = options || {};
  let response;
  try {
    response = await fetch(path, { ...opts, headers: apiHeaders(opts.headers) });
  } catch (err) {
    throw new ApiFailure(`the service did not answer (${err.message})`);
  }
  if (opts.raw && response.ok) return response;
  const type = response.headers.get("Content-Type") || "";
  const body = type.startsWith("application/json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const told = body && typeof body.error === "string" ? body.error : `HTTP ${response.status}`;
    const failure = new ApiFailure(told);
    failure.status = response.status;
    throw failure;
  }
  return body;
}

function postJson(path, doc) {
  return api(path, { method: "POST", body: JSON.stringify(doc), headers: { "Content-Type": "application/json" } });
}

// -- searching -------------------------------------------------------------------------------

function where() {
  return { collection: ui.collection.value.trim() || "default", space: ui.space.value };
}

function request(query, offset) {
  const page = { ...query.where, limit: PAGE_SIZE, offset };
  if (query.kind === "text") return postJson("/v1/search", { ...page, text: query.text });
  if (query.kind === "similar") return postJson("/v1/search/similar", { ...page, id: query.id });
  const params = new URLSearchParams(Object.entries(page).map(([k, v]) => [k, String(v)]));
  return api(`/v1/search/image?${params}`, {
    method: "POST",
    body: query.image,
    headers: { "Content-Type": query.image.type || "application/octet-stream" },
  });
}

// ``query`` keeps the collection and space it was first asked in, so that its pages match.
async function run(query, offset) {
  const seq = ++state.seq;
  query.where = query.where || where();
  state.query = query;
  showError("");
  ui.results.setAttribute("aria-busy", "true");
  ui.status.textContent = `Searching ${query.what}…`;
  const started = performance.now();
  try {
    const page = await request(query, offset);
    if (seq !== state.seq) return;
    state.offset = page.offset;
    state.nextOffset = page.next_offset;
    render(page.hits);
    const ms = Math.round(performance.now() - started);
    const span = page.hits.length ? `${page.offset + 1}–${page.offset + page.hits.length}` : "none";
    ui.status.textContent = `${query.what}: hits ${span} in ${query.where.space}, ${ms} ms`;
  } catch (err) {
    if (seq !== state.seq) return;
    render([]);
    state.nextOffset = null;
    ui.status.textContent = `${query.what}: no answer`;
    showError(err.message);
    if (err.status === 401) ui.key.focus();
  } finally {
    if (seq === state.seq) {
      ui.results.removeAttribute("aria-busy");
      updatePager();
    }
  }
}

function showError(message) {
  ui.error.textContent = message ? `Error: ${message}` : "";
  ui.error.hidden = !message;
}

function updatePager() {
  ui.prev.disabled = state.query === null || state.offset === 0;
  ui.next.disabled = state.nextOffset === null || state.nextOffset === undefined;
  ui.pageInfo.textContent = state.query ? `page ${Math.floor(state.offset / PAGE_SIZE) + 1}` : "";
}

function searchText() {
  const text = ui.query.value.trim();
  if (!text) return;
  run({ kind: "text", text, what: `“${text}”` }, 0);
}

function searchImage(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image`);
    return;
  }
  if (ui.preview.src) URL.revokeObjectURL(ui.preview.src);
  ui.preview.src = URL.createObjectURL(file);
  ui.preview.hidden = false;
  run({ kind: "image", image: file, what: `image ${file.name || "(pasted)"}` }, 0);
}

function searchSimilar(hit) {
  if (hit.space && [...ui.space.options].some((o) => o.value === hit.space)) ui.space.value = hit.space;
  run({ kind: "similar", id: hit.id, what: `more like ${hit.media_id || hit.id}` }, 0);
}

// -- the hits --------------------------------------------------------------------------------

function render(hits) {
  state.blobUrls.forEach((url) => URL.revokeObjectURL(url));
  state.blobUrls = [];
  ui.results.replaceChildren(...hits.map(card));
  if (!hits.length && state.query) {
    const none = document.createElement("p");
    none.className = "empty";
    none.textContent = "No hits.";
    ui.results.append(none);
  }
}

function card(hit) {
  const node = ui.card.content.firstElementChild.cloneNode(true);
  const q = (sel) => node.querySelector(sel);
  node.dataset.space = hit.space || "";
  q(".label").textContent = hit.label || hit.space || "hit";
  q(".chip").textContent = hit.space || "?";
  q(".score").textContent = typeof hit.score === "number" ? hit.score.toFixed(3) : "";
  q(".score").title = "cosine similarity";
  q(".media").textContent = hit.media_id || "";
  q(".media").title = `media ${hit.media_id || "?"}, frame ${hit.frame_index ?? "?"}, point ${hit.id}`;
  const video = isVideoFrame(hit);
  q(".time").textContent = video ? clock(hit.timestamp_s) : "";
  q(".time").hidden = !video;
  const link = safeSource(hit.source_url, video ? hit.timestamp_s : null);
  if (link) q(".source").href = link;
  else q(".source").remove();
  q(".similar").addEventListener("click", () => searchSimilar(hit));
  drawFrame(q(".frame"), hit);
  return node;
}

function isVideoFrame(hit) {
  return typeof hit.timestamp_s === "number" && hit.timestamp_s > 0;
}

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  const s = (seconds - m * 60).toFixed(1).padStart(4, "0");
  return `${m}:${s}`;
}

// Only http(s) links: a javascript: or data: URL from a stored payload must not become a link.
function safeSource(url, seconds) {
  if (typeof url !== "string" || !url) return null;
  let parsed;
  try {
    parsed = new URL(url, window.location.href);
  } catch {
    return null;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return null;
  if (seconds !== null) parsed.hash = `t=${Number(seconds.toFixed(3))}`;
  return parsed.href;
}

// The frame area: the thumbnail scaled into a fixed-aspect box, and the hit's box drawn over it in
// percentages of the frame. The frame's size (the pixel space of the box) comes with the hit or
// with its thumbnail (X-Frame-Width, X-Frame-Height). Until the thumbnail arrives, and where there
// is none, a placeholder stands in: of the frame's shape, or without the frame's size, of the
// box's own shape with the box around it.
function drawFrame(frame, hit) {
  const box = validBox(hit.box);
  const size = frameSize(hit.frame_width, hit.frame_height);
  placeholder(frame, hit, box, size);
  if (hit.thumbnail_url) loadThumbnail(frame, hit, box, size);
}

function placeholder(frame, hit, box, size) {
  frame.replaceChildren();
  frame.classList.add("placeholder");
  if (box && !size) {
    const [w, h] = [box[2] - box[0], box[3] - box[1]];
    fit(frame, w, h);
    addBox(frame, hit, box, [box[0], box[1], w, h]);
    return;
  }
  fit(frame, ...(size || [4, 3]));
  if (box) addBox(frame, hit, box, [0, 0, ...size]);
}

function frameSize(width, height) {
  const w = Number(width);
  const h = Number(height);
  return Number.isFinite(w) && Number.isFinite(h) && w > 0 && h > 0 ? [w, h] : null;
}

function validBox(box) {
  if (!Array.isArray(box) || box.length !== 4 || !box.every((v) => Number.isFinite(v))) return null;
  return box[2] > box[0] && box[3] > box[1] ? box : null;
}

const THUMB_ASPECT = 4 / 3; // the .thumb area's shape (style.css)

function fit(frame, w, h) {
  const aspect = w / h;
  frame.style.width = aspect >= THUMB_ASPECT ? "100%" : `${(aspect / THUMB_ASPECT) * 100}%`;
  frame.style.height = aspect >= THUMB_ASPECT ? `${(THUMB_ASPECT / aspect) * 100}%` : "100%";
}

// ``box`` in frame pixels, drawn over the area [x, y, width, height] of the frame that ``frame`` shows.
function addBox(frame, hit, box, [x, y, w, h]) {
  const el = document.createElement("div");
  el.className = `box box-${hit.space === "face" ? "face" : "object"}`;
  const pct = (v, from, span) => Math.min(100, Math.max(0, ((v - from) / span) * 100));
  const [x0, y0, x1, y1] = [pct(box[0], x, w), pct(box[1], y, h), pct(box[2], x, w), pct(box[3], y, h)];
  el.style.left = `${x0}%`;
  el.style.top = `${y0}%`;
  el.style.width = `${x1 - x0}%`;
  el.style.height = `${y1 - y0}%`;
  el.title = `box ${box.map((v) => Math.round(v)).join(", ")}`;
  frame.append(el);
}

// Thumbnails are fetched with the API key header and shown as blob: URLs. A hit with a box whose
// frame size is known from neither the hit nor the thumbnail keeps its placeholder.
async function loadThumbnail(frame, hit, box, size) {
  let response;
  try {
    response = await api(hit.thumbnail_url, { raw: true });
  } catch (err) {
    frame.title = `no thumbnail: ${err.message}`;
    return;
  }
  const known = size || frameSize(response.headers.get("X-Frame-Width"), response.headers.get("X-Frame-Height"));
  const blob = await response.blob();
  if (box && !known) return;
  const blobUrl = URL.createObjectURL(blob);
  state.blobUrls.push(blobUrl);
  const img = document.createElement("img");
  img.alt = "";
  img.className = "thumbnail";
  img.addEventListener("load", () => {
    if (!known) fit(frame, img.naturalWidth, img.naturalHeight); // the thumbnail is the whole frame
    frame.classList.remove("placeholder");
    frame.prepend(img);
  });
  img.src = blobUrl;
  frame.replaceChildren();
  if (known) fit(frame, ...known);
  if (box) addBox(frame, hit, box, [0, 0, ...known]);
}

// -- collections and live counters -----------------------------------------------------------

async function loadCollections() {
  let names = [];
  try {
    const doc = await api("/v1/collections");
    names = (doc.collections || []).filter((c) => typeof c.name === "string");
  } catch (err) {
    if (err.status === 401) showError(err.message);
  }
  if (!names.length) names = [{ name: "default", points: null }];
  ui.collections.replaceChildren(
    ...names.map((c) => {
      const option = document.createElement("option");
      option.value = c.name;
      const size = typeof c.points === "number" ? `${c.points.toLocaleString("en")} points` : "";
      option.label = c.alias_of ? `alias of ${c.alias_of}${size && ` · ${size}`}` : size;
      return option;
    }),
  );
  const saved = localStorage.getItem(COLLECTION_STORE);
  const known = names.map((c) => c.name);
  ui.collection.value = saved && known.includes(saved) ? saved : known.includes("default") ? "default" : known[0];
  watchCollection();
}

async function loadSpaces() {
  try {
    const doc = await api("/openapi.json"); // the service's own list: one place declares the spaces
    const params = doc.paths["/v1/search/image"].post.parameters;
    const spaces = params.find((p) => p.name === "space").schema;
    ui.space.replaceChildren(
      ...spaces.enum.map((name) => {
        const option = document.createElement("option");
        option.value = option.textContent = name;
        return option;
      }),
    );
    ui.space.value = spaces.default || "scene";
  } catch (err) {
    console.warn("the space list could not be read from /openapi.json; scene only", err);
  }
}

function watchCollection() {
  const name = where().collection;
  if (ui.counterName.textContent === name && state.samples.length) return;
  localStorage.setItem(COLLECTION_STORE, name);
  ui.counterName.textContent = name;
  state.samples = [];
  ui.points.textContent = ui.rate.textContent = "–";
  poll();
}

async function poll() {
  const name = where().collection;
  let points;
  let detail = "";
  try {
    const doc = await api(`/v1/collections/${encodeURIComponent(name)}/spaces`);
    points = doc.spaces.reduce((sum, s) => sum + s.count, 0);
    detail = doc.spaces.map((s) => `${s.space} ${s.count}`).join(" · ");
  } catch (err) {
    if (err.status !== 404) {
      ui.live.classList.remove("on");
      ui.live.title = `counters: ${err.message}`;
      return;
    }
    points = 0; // nothing stored under this name yet
    detail = "nothing stored yet";
  }
  if (name !== where().collection) return;
  const samples = state.samples;
  samples.push({ t: performance.now(), points });
  if (samples.length > RATE_WINDOW) samples.shift();
  ui.points.textContent = points.toLocaleString("en");
  ui.points.parentElement.title = detail;
  if (samples.length > 1) {
    const first = samples[0];
    const rate = (points - first.points) / ((samples[samples.length - 1].t - first.t) / 1000);
    ui.rate.textContent = Math.max(0, rate).toFixed(1);
  }
  ui.live.classList.add("on");
  ui.live.title = "counters are live";
}

function schedulePolls() {
  setInterval(() => {
    if (!document.hidden) poll();
  }, POLL_MS);
}

// -- wiring ----------------------------------------------------------------------------------

function wire() {
  ui.key.value = localStorage.getItem(KEY_STORE) || "";
  ui.key.addEventListener("change", () => {
    const key = ui.key.value.trim();
    if (key) localStorage.setItem(KEY_STORE, key);
    else localStorage.removeItem(KEY_STORE);
    loadCollections();
  });
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    searchText();
  });
  ui.collection.addEventListener("change", watchCollection);
  ui.prev.addEventListener("click", () => run(state.query, Math.max(0, state.offset - PAGE_SIZE)));
  ui.next.addEventListener("click", () => run(state.query, state.nextOffset));
  ui.file.addEventListener("change", () => searchImage(ui.file.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    ui.drop.addEventListener(name, (event) => {
      event.preventDefault();
      ui.drop.classList.add("over");
    });
  }
  ui.drop.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
  ui.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    ui.drop.classList.remove("over");
    searchImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) searchImage(file);
  });
}

wire();
loadSpaces();
loadCollections();
schedulePolls();
