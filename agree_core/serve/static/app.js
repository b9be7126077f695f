// The agree serve page: search, thumbnails with heatmaps, the full page, uploads with progress.
// Plain script, no build step; every call goes to this server's JSON API (see /docs).
"use strict";

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("agree-token") || "";

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this server needs a token");
  }
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

async function imageInto(img, path) {
  // fetch (not <img src>) so that the token travels with the request
  const blob = await (await api(path)).blob();
  img.src = URL.createObjectURL(blob);
}

const baseName = (path) => path.split(/[\\/]/).pop();
const pageId = (hit) => hit.image_url.split("/")[2];
const heatmapPath = (hit, query, width) =>
  `/pages/${pageId(hit)}/heatmap?query=${encodeURIComponent(query)}` + (width ? `&width=${width}` : "");

async function loadInfo() {
  const info = await (await api("/info")).json();
  $("summary").textContent = `${info.pages} pages in ${info.documents.length} documents · encoder ${info.encoder}`;
  const select = $("doc");
  const chosen = select.value;
  select.length = 1;
  for (const d of info.documents) {
    const option = new Option(`${baseName(d.source)} (${d.pages} p.)`, d.source);
    select.add(option);
  }
  select.value = chosen;
}

async function search(event) {
  if (event) event.preventDefault();
  const query = $("q").value.trim();
  if (!query) return;
  const body = { query, k: Number($("k").value) };
  if ($("doc").value) body.filters = { source: $("doc").value };
  $("status").textContent = "searching…";
  const results = $("results");
  try {
    const started = performance.now();
    const data = await (await api("/search", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    })).json();
    const hits = data.results[0].hits;
    results.replaceChildren();
    hits.forEach((hit, i) => results.append(card(hit, i + 1, query)));
    $("status").textContent = hits.length
      ? `${hits.length} pages in ${Math.round(performance.now() - started)} ms`
      : "no pages: the index is empty";
    history.replaceState(null, "", "?q=" + encodeURIComponent(query));
  } catch (e) {
    $("status").textContent = "search failed: " + e.message;
  }
}

function card(hit, rank, query) {
  const div = document.createElement("div");
  div.className = "hit";
  div.dataset.source = hit.source;
  div.dataset.page = hit.page;
  div.dataset.rank = rank;
  const img = document.createElement("img");
  img.alt = `${baseName(hit.source)} page ${hit.page}`;
  const caption = document.createElement("div");
  caption.className = "caption";
  const name = document.createElement("b");
  name.textContent = `#${rank} ${baseName(hit.source)}`;
  name.title = hit.source;
  const line = document.createElement("span");
  line.innerHTML = `page ${hit.page} · <span class="score">score ${hit.score.toFixed(2)}</span>`;
  caption.append(name, line);
  div.append(img, caption);
  imageInto(img, heatmapPath(hit, query, 360)).catch(() => { img.alt = "image unavailable"; });
  div.addEventListener("click", () => openPage(hit, query));
  return div;
}

async function openPage(hit, query) {
  $("viewer-title").textContent = `${baseName(hit.source)}, page ${hit.page}`;
  $("viewer-evidence").textContent = "loading the evidence…";
  $("viewer").hidden = false;
  const img = $("viewer-image");
  img.removeAttribute("src");
  try {
    await imageInto(img, heatmapPath(hit, query));
    const ev = await (await api(`/pages/${pageId(hit)}/evidence?query=${encodeURIComponent(query)}`)).json();
    const cells = ev.best_cells.map((c) => `(${c.row}, ${c.col}) ${c.value.toFixed(2)}`).join(", ");
    $("viewer-evidence").textContent =
      `score ${hit.score.toFixed(2)} (word matches ${ev.score.toFixed(2)}) over a ${ev.grid[0]}×${ev.grid[1]} grid; ` +
      `strongest regions: ${cells || "none"}`;
  } catch (e) {
    $("viewer-evidence").textContent = "could not load the page: " + e.message;
  }
}

async function upload(event) {
  event.preventDefault();
  const files = $("files").files;
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  const progress = $("progress");
  progress.hidden = false;
  progress.removeAttribute("value");
  $("job-status").textContent = "uploading…";
  try {
    const { job } = await (await api("/documents", { method: "POST", body: form })).json();
    for (;;) {
      const state = await (await api(`/jobs/${job}`)).json();
      if (state.pages_total) { progress.max = state.pages_total; progress.value = state.pages_done; }
      $("job-status").textContent = `${state.state}: ${state.pages_done} / ${state.pages_total} pages`;
      if (["done", "failed", "stopped", "interrupted"].includes(state.state)) {
        const skipped = state.skipped.map((s) => `${baseName(s.path)}: ${s.reason}`).join("; ");
        if (state.error || skipped) $("job-status").textContent += " · " + (state.error || skipped);
        break;
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    await loadInfo();
  } catch (e) {
    $("job-status").textContent = "upload failed: " + e.message;
  }
}

$("search").addEventListener("submit", search);
$("upload").addEventListener("submit", upload);
$("close").addEventListener("click", () => { $("viewer").hidden = true; });
$("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) $("viewer").hidden = true; });
$("token-save").addEventListener("click", () => {
  token = $("token").value.trim();
  sessionStorage.setItem("agree-token", token);
  $("token-box").hidden = true;
  loadInfo().catch((e) => { $("summary").textContent = e.message; });
});

const initial = new URLSearchParams(location.search).get("q");
loadInfo().then(() => { if (initial) { $("q").value = initial; search(); } })
  .catch((e) => { $("summary").textContent = e.message; });
