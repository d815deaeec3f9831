// The search page of `clipcli serve`: a query box, a score floor and a photo to search by,
// over the server's JSON API. Every path and message reaches the page as text (textContent,
// attributes), never as markup: file names are data, and some are hostile.
"use strict";

(() => {
  const TYPING_PAUSE_MS = 200; // results follow the typing, one request per pause
  const DEFAULT_TOP_K = 48; // four rows of a wide window's grid
  // Filters the server understands (`under` repeatable); a bookmarked URL may carry them, and
  // every search of the page then keeps to them.
  const FILTERS = ["under", "since", "until", "ext"];

  const $ = (id) => document.getElementById(id);
  const query = $("q");
  const floor = $("min-score");
  const floorShown = $("min-score-value");
  const results = $("results");
  const status = $("status");
  const fileInput = $("file");
  const dropZone = $("drop-zone");
  const lightbox = $("lightbox");
  const lightboxImage = $("lightbox-image");

  // What the results show: {kind: "text", text} | {kind: "similar", id, name} |
  // {kind: "image", file} | null (nothing asked yet).
  let current = null;
  let typingTimer = 0;
  // Each request gets the next number; an answer is drawn only while its number is the latest,
  // so a slow answer to an old query can never replace the answer to a newer one.
  let latest = 0;
  let inFlight = null;
  let openedFrom = null; // the tile's button that opened the lightbox, focused again on close

  const params = new URLSearchParams(window.location.search);
  const topK = positiveInt(params.get("top_k")) || DEFAULT_TOP_K;
  const filters = FILTERS.flatMap((name) =>
    params.getAll(name).filter(Boolean).map((value) => [name, value]),
  );

  function positiveInt(text) {
    const value = Number.parseInt(text || "", 10);
    return value > 0 ? value : 0;
  }

  function fileName(path) {
    const parts = String(path).split(/[\\/]/);
    return parts[parts.length - 1] || String(path);
  }

  function minScore() {
    return Number(floor.value);
  }

  function showFloor() {
    floorShown.textContent = minScore().toFixed(2);
  }

  function setStatus(text, state) {
    status.textContent = text;
    status.dataset.state = state;
    results.setAttribute("aria-busy", state === "loading" ? "true" : "false");
  }

  function plural(count, one, many) {
    return `${count.toLocaleString()} ${count === 1 ? one : many}`;
  }

  // --- the URL: what is asked, so that a page can be bookmarked and reloaded ---------------

  function urlFor(ask) {
    const search = new URLSearchParams();
    if (ask && ask.kind === "text") search.set("q", ask.text);
    if (ask && ask.kind === "similar") search.set("similar", String(ask.id));
    if (minScore() > 0) search.set("min_score", minScore().toFixed(2));
    if (topK !== DEFAULT_TOP_K) search.set("top_k", String(topK));
    for (const [name, value] of filters) search.append(name, value);
    const text = search.toString();
    return window.location.pathname + (text ? `?${text}` : "");
  }

  function remember(ask, { newEntry = false } = {}) {
    const url = urlFor(ask);
    if (url === window.location.pathname + window.location.search) return;
    const state = ask && ask.kind === "similar" ? { similarName: ask.name } : null;
    if (newEntry) window.history.pushState(state, "", url);
    else window.history.replaceState(state, "", url);
  }

  function askFromUrl() {
    const here = new URLSearchParams(window.location.search);
    const floorValue = Number(here.get("min_score"));
    const floorGiven = Number.isFinite(floorValue) && floorValue > 0;
    floor.value = floorGiven ? String(Math.min(floorValue, 1)) : "0";
    showFloor();
    const similar = positiveInt(here.get("similar"));
    if (here.has("similar") && String(similar) === here.get("similar").trim()) {
      query.value = "";
      const name = (window.history.state && window.history.state.similarName) || `photo ${similar}`;
      return { kind: "similar", id: similar, name };
    }
    query.value = here.get("q") || "";
    return query.value.trim() ? { kind: "text", text: query.value.trim() } : null;
  }

  // --- asking the server --------------------------------------------------------------------

  function commonParams() {
    const search = new URLSearchParams();
    search.set("top_k", String(topK));
    search.set("min_score", String(minScore()));
    for (const [name, value] of filters) search.append(name, value);
    return search;
  }

  function request(ask) {
    const search = commonParams();
    if (ask.kind === "text") {
      search.set("q", ask.text);
      return { url: `/api/search?${search}`, init: {} };
    }
    if (ask.kind === "similar") {
      return { url: `/api/similar/${encodeURIComponent(ask.id)}?${search}`, init: {} };
    }
    const form = new FormData();
    form.append("image", ask.file, ask.file.name || "image");
    return { url: `/api/search/image?${search}`, init: { method: "POST", body: form } };
  }

  // How the status line names what is asked: while searching, when found, when nothing is.
  function wording(ask) {
    if (ask.kind === "text") {
      const text = `“${ask.text}”`;
      return { searching: `Searching for ${text}…`, found: `for ${text}`, none: `match ${text}` };
    }
    const name = ask.kind === "similar" ? ask.name : ask.file.name || "the dropped image";
    const like = `like ${name}`;
    return { searching: `Looking for photos ${like}…`, found: like, none: like };
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string" && body.error) return body.error;
    } catch (_) {
      // not JSON: the status line says what HTTP said
    }
    return `The server answered ${response.status} ${response.statusText}`.trim();
  }

  async function run(ask) {
    window.clearTimeout(typingTimer);
    if (inFlight) inFlight.abort();
    current = ask;
    const number = ++latest;
    if (!ask) {
      inFlight = null;
      results.replaceChildren();
      setStatus("Type what you are looking for, or drop a photo anywhere on the page.", "idle");
      return;
    }
    const controller = new AbortController();
    inFlight = controller;
    setStatus(wording(ask).searching, "loading");
    const { url, init } = request(ask);
    let hits;
    try {
      const response = await fetch(url, { ...init, signal: controller.signal });
      if (!response.ok) throw new Error(await errorText(response));
      hits = await response.json();
      if (!Array.isArray(hits)) throw new Error("The server's answer is not a list of photos");
    } catch (error) {
      if (number !== latest) return;
      inFlight = null;
      results.replaceChildren();
      const text = error instanceof TypeError
        ? "The clipcli server cannot be reached: is `clipcli serve` still running?"
        : error.message;
      setStatus(text, "error");
      return;
    }
    if (number !== latest) return;
    inFlight = null;
    show(ask, hits);
  }

  function show(ask, hits) {
    results.replaceChildren(...hits.map(tile));
    if (hits.length === 0) {
      const hint = minScore() > 0 ? " Lower the score floor to see weaker matches." : "";
      setStatus(`No photos ${wording(ask).none}.${hint}`, "empty");
    } else {
      const found = `${plural(hits.length, "photo", "photos")} ${wording(ask).found}`;
      setStatus(`${found}, best first.`, "done");
    }
  }

  // --- the results ----------------------------------------------------------------------------

  function tile(hit) {
    const name = fileName(hit.path);
    const score = Number(hit.score).toFixed(3);
    const item = document.createElement("li");
    item.className = "hit";
    item.dataset.id = String(hit.id);
    item.dataset.path = hit.path;
    item.title = `${hit.path}\nscore ${score}`;

    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    const image = document.createElement("img");
    image.className = "thumb";
    image.loading = "lazy";
    image.decoding = "async";
    image.alt = name;
    image.src = `/thumb/${encodeURIComponent(hit.id)}`;
    image.addEventListener("error", () => {
      // The thumbnail could not be made (an unreadable file): its name stands in for it.
      item.classList.add("broken");
      const note = document.createElement("span");
      note.className = "unreadable";
      note.textContent = name;
      open.replaceChildren(note);
    });
    open.append(image);
    open.addEventListener("click", () => openLightbox(hit, open));

    const caption = document.createElement("div");
    caption.className = "caption";
    const scoreText = document.createElement("span");
    scoreText.className = "score";
    scoreText.textContent = score;
    const nameText = document.createElement("span");
    nameText.className = "name";
    nameText.textContent = name;
    const pathText = document.createElement("span");
    pathText.className = "path";
    pathText.textContent = hit.path;
    caption.append(scoreText, nameText, pathText);

    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "similar";
    similar.textContent = "More like this";
    similar.setAttribute("aria-label", `More like ${name}`);
    similar.addEventListener("click", () => {
      const ask = { kind: "similar", id: hit.id, name };
      query.value = "";
      remember(ask, { newEntry: true });
      run(ask);
    });

    item.append(open, caption, similar);
    return item;
  }

  // --- the lightbox -------------------------------------------------------------------------

  function openLightbox(hit, opener) {
    openedFrom = opener;
    const name = fileName(hit.path);
    $("lightbox-score").textContent = `score ${Number(hit.score).toFixed(3)}`;
    $("lightbox-path").textContent = hit.path;
    $("lightbox-note").textContent = "";
    lightboxImage.alt = name;
    lightboxImage.dataset.id = String(hit.id);
    lightboxImage.src = `/image/${encodeURIComponent(hit.id)}`;
    lightbox.hidden = false;
    document.body.classList.add("has-lightbox");
    $("lightbox-close").focus();
  }

  lightboxImage.addEventListener("error", () => {
    // A format the browser cannot draw (HEIC, RAW): the thumbnail the server made instead.
    const thumb = `/thumb/${encodeURIComponent(lightboxImage.dataset.id)}`;
    if (lightbox.hidden || lightboxImage.getAttribute("src") === thumb) return;
    $("lightbox-note").textContent =
      "This browser cannot show the original; its thumbnail is shown.";
    lightboxImage.src = thumb;
  });

  function closeLightbox() {
    if (lightbox.hidden) return;
    lightbox.hidden = true;
    document.body.classList.remove("has-lightbox");
    lightboxImage.removeAttribute("src");
    if (openedFrom && openedFrom.isConnected) openedFrom.focus();
    openedFrom = null;
  }

  lightbox.addEventListener("click", closeLightbox);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !lightbox.hidden) {
      event.preventDefault();
      closeLightbox();
    }
  });

  // --- searching by a photo: dropped anywhere, or chosen -----------------------------------

  function searchByFile(file) {
    if (!file) return;
    query.value = "";
    const ask = { kind: "image", file };
    remember(null); // an image cannot travel in a URL: the URL keeps only the floor
    run(ask);
  }

  $("pick").addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    searchByFile(fileInput.files[0]);
    fileInput.value = ""; // so that choosing the same file again searches again
  });

  function carriesFiles(event) {
    return Boolean(event.dataTransfer) && Array.from(event.dataTransfer.types).includes("Files");
  }

  // dragenter and dragleave fire for every element crossed: count them, so that the drop
  // zone stays up until the drag has really left the window.
  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth += 1;
    dropZone.hidden = false;
  });
  document.addEventListener("dragover", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault(); // without it the browser opens the file instead of dropping it
    event.dataTransfer.dropEffect = "copy";
  });
  document.addEventListener("dragleave", (event) => {
    if (!carriesFiles(event)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) dropZone.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    dragDepth = 0;
    dropZone.hidden = true;
    const files = Array.from(event.dataTransfer.files);
    searchByFile(files.find((file) => file.type.startsWith("image/")) || files[0]);
  });

  // --- typing, the floor, the URL --------------------------------------------------------------

  function askFromBox() {
    const text = query.value.trim();
    return text ? { kind: "text", text } : null;
  }

  query.addEventListener("input", () => {
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(() => {
      const ask = askFromBox();
      remember(ask);
      run(ask);
    }, TYPING_PAUSE_MS);
  });

  $("search").addEventListener("submit", (event) => {
    event.preventDefault(); // Enter searches at once, without a page load
    const ask = askFromBox();
    remember(ask);
    run(ask);
  });

  floor.addEventListener("input", () => {
    showFloor();
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(() => {
      remember(current && current.kind !== "image" ? current : null);
      run(current);
    }, TYPING_PAUSE_MS);
  });

  window.addEventListener("popstate", () => run(askFromUrl()));

  async function showInfo() {
    const info = $("info");
    try {
      const response = await fetch("/api/info");
      if (!response.ok) throw new Error(await errorText(response));
      const about = await response.json();
      info.textContent = `${plural(about.photos, "photo", "photos")} · ${about.model}`;
      info.title = about.index;
    } catch (error) {
      info.textContent =
        error instanceof TypeError ? "The server cannot be reached" : error.message;
      info.classList.add("error");
    }
  }

  showFloor();
  showInfo();
  run(askFromUrl());
})();
