// transcribe-serve's page: add sources, watch them, read and search transcripts, all over the HTTP API;
// live captions of the microphone over /v1/realtime.
// Plain JavaScript, no build step; text from the server is always set as text, never parsed as HTML.
"use strict";

const KEY_STORAGE = "transcribe-serve.api-key";
const PAGE_SIZE = 20;
const POLL_MS = 1000;

// The API's failure codes (an error's `code`, a job item's `error_type`) in words.
const REASONS = {
  bot_check: "YouTube asked to sign in to prove this is not a bot. The server needs a cookies file "
    + "(downloader.cookies_file) to fetch this video.",
  captions_blocked: "YouTube refused to give the captions. Try again later, or choose speech recognition.",
  no_captions: "This video has no captions. Choose \u201ccaptions if the video has them\u201d or "
    + "\u201cspeech recognition only\u201d to transcribe its audio.",
  no_audio_stream: "There is no audio in this source.",
  unsupported_audio: "This is not audio or video that can be decoded.",
  truncated_audio: "The file was cut short: its header promises more audio than it holds.",
  audio_too_long: "The audio is longer than this service accepts.",
  download_too_large: "The download is larger than this service accepts.",
  too_large: "The file is larger than this service accepts.",
  download_timeout: "The download took too long.",
  source_unreachable: "The source could not be reached. Trying again later may work.",
  source_not_found: "The source was not found: its server answered with an error.",
  unsupported_url: "No media was found at this address.",
  video_unavailable: "The video is unavailable (private, removed or restricted).",
  live_stream: "A live stream can be transcribed only after it has ended.",
  forbidden_address: "This address is on a private network, which the service does not fetch from.",
  playlist_not_allowed: "A playlist cannot be one item; it is expanded into its videos instead.",
  model_not_found: "The service does not offer that model.",
  invalid_parameter: "The request was refused as invalid.",
  overloaded: "The service is busy. Try again in a moment.",
  rate_limit_exceeded: "Too many requests with this key. Wait a minute and try again.",
  invalid_api_key: "The API key was refused.",
};

const $ = (selector) => document.querySelector(selector);
const views = ["key", "add", "library", "read", "search", "live"];
const uploads = [];  // transcriptions of dropped files: answered, not stored, so kept in this tab
let keysRequired = false;
let afterKey = "#/add";

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A failure in words: the reason for its code, then the server's own message. */
function reason(code, message) {
  const words = REASONS[code];
  if (words && message) return `${words} (${message})`;
  return words || message || "The request failed.";
}

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function clock(seconds) {
  const whole = Math.max(0, Math.floor(seconds));
  const h = Math.floor(whole / 3600), m = Math.floor((whole % 3600) / 60), s = whole % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? `${h}:` : "") + `${mm}:${String(s).padStart(2, "0")}`;
}

function say(message) {
  $("#status").textContent = message;
}

/** Fetch from the API with the session's key; an API error becomes an ApiError with its code. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (response.ok) return response;
  let code = null, message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    code = body.error?.code ?? null;
    message = body.error?.message ?? message;
  } catch (_) { /* not a JSON error body: the status line says it */ }
  if (response.status === 401) askForKey(message);
  throw new ApiError(response.status, code, message);
}

const apiJson = async (path, options) => (await api(path, options)).json();

/** A view's data, or null when the user has moved to another view while it was on its way. */
async function viewData(path) {
  const hash = location.hash;
  const data = await apiJson(path);
  return location.hash === hash ? data : null;
}

function askForKey(message) {
  if (!location.hash.startsWith("#/key")) afterKey = location.hash || "#/add";
  $("#key-error").textContent = message || "";
  location.hash = "#/key";
}

function show(view) {
  if (view !== "read") $("#player audio")?.pause();
  for (const name of views) $(`#${name}-view`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $(`#${view}-title`).focus();
}

/** The hash is the view: #/add, #/library?offset=N, #/read/<id>?t=S, #/upload/<n>, #/search?q=…, #/live */
async function route() {
  const [path, query] = (location.hash.slice(1) || "/add").split("?");
  const params = new URLSearchParams(query || "");
  say("");
  if (keysRequired && !sessionStorage.getItem(KEY_STORAGE) && path !== "/key") return askForKey("");
  try {
    if (path === "/key") show("key");
    else if (path === "/library") await showLibrary(Number(params.get("offset")) || 0);
    else if (path.startsWith("/read/")) await showStored(decodeURIComponent(path.slice(6)), params.get("t"));
    else if (path.startsWith("/upload/")) showUpload(Number(path.slice(8)));
    else if (path === "/search") await showSearch(params.get("q") || "");
    else if (path === "/live") show("live");
    else show("add");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return;
    say(error instanceof ApiError ? reason(error.code, error.message) : String(error));
  }
}

// ---- Add: URLs become a job, files become transcriptions --------------------------------------------

function addItem(label) {
  const state = element("span", { className: "state", textContent: "queued" });
  const detail = element("span", { className: "meta" });
  const item = element("li", {}, state, element("span", { className: "source", textContent: label }), " ", detail);
  item.dataset.status = "queued";
  $("#items").append(item);
  return { item, state, detail };
}

function setItem(row, status, words, link) {
  row.item.dataset.status = status;
  row.state.textContent = status === "skipped" ? "already stored" : status;
  row.detail.replaceChildren();
  if (link) row.detail.append(element("a", { href: link.href, textContent: link.text }));
  row.item.querySelector(".reason")?.remove();
  if (words) row.item.append(element("span", { className: "reason", textContent: words }));
}

function itemLink(item) {
  if (!item.transcript_key) return null;
  const seconds = item.audio_seconds ? ` (${clock(item.audio_seconds)}, ${item.source})` : "";
  return { href: `#/read/${encodeURIComponent(item.transcript_key)}`, text: `Read${seconds}` };
}

async function watchJob(jobId, rows) {
  for (;;) {
    const job = await apiJson(`/v1/jobs/${encodeURIComponent(jobId)}`);
    for (const item of job.items) {
      const words = item.status === "failed" ? reason(item.error_type, item.error_message) : "";
      setItem(rows[item.position], item.status, words, itemLink(item));
    }
    if (job.status === "finished") return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function submitUrls(urls, source) {
  const rows = urls.map(addItem);
  const body = { urls, source };
  if ($("#language").value) body.language = $("#language").value;
  if ($("#translate").checked) body.translate = true;
  if ($("#diarize").checked) body.diarize = true;
  try {
    const { job_id: jobId } = await apiJson("/v1/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    await watchJob(jobId, rows);
  } catch (error) {
    for (const row of rows) setItem(row, "failed", reason(error.code, error.message));
  }
}

/** A multipart body of ``file`` and the ``fields`` that have a value. */
function uploadForm(file, fields) {
  const form = new FormData();
  form.append("file", file);
  for (const [name, value] of Object.entries(fields)) if (value) form.append(name, value);
  return form;
}

/** A dropped file transcribed (not stored); with "Also in English", speech in another language translated too. */
async function submitFile(file, source, translate) {
  const row = addItem(file.name);
  setItem(row, "running", "");
  const fields = { source, response_format: "verbose_json", "timestamp_granularities[]": "segment",
    language: $("#language").value, diarize: $("#diarize").checked ? "true" : "" };
  try {
    const result = await apiJson("/v1/audio/transcriptions", { method: "POST", body: uploadForm(file, fields) });
    const media = URL.createObjectURL(file);
    const n = uploads.push({ ...result, title: file.name, media }) - 1;
    if (translate && result.language !== "en") {
      const english = await apiJson("/v1/audio/translations", {
        method: "POST", body: uploadForm(file, { model: result.model, response_format: "verbose_json" }),
      });
      const version = { ...english, language: "en", title: `${file.name} (English)`, media, other: n, english: true };
      uploads[n].other = uploads.push(version) - 1;
    }
    setItem(row, "done", "", { href: `#/upload/${n}`, text: `Read (${clock(result.duration)}, not stored)` });
  } catch (error) {
    setItem(row, "failed", reason(error.code, error.message));
  }
}

async function onAdd(event) {
  event.preventDefault();
  const urls = $("#urls").value.split("\n").map((u) => u.trim()).filter(Boolean);
  const files = [...$("#files").files];
  const source = new FormData($("#add-form")).get("source");
  $("#add-error").textContent = urls.length || files.length ? "" : "Give at least one link or file.";
  if (!urls.length && !files.length) return;
  $("#urls").value = "";
  $("#files").value = "";
  const work = files.map((file) => submitFile(file, source, $("#translate").checked));
  if (urls.length) work.push(submitUrls(urls, source));
  await Promise.all(work);
}

function onDrop(event) {
  event.preventDefault();
  $("#drop").classList.remove("over");
  $("#files").files = event.dataTransfer.files;
}

// ---- Library --------------------------------------------------------------------------------------

function origin(row) {
  if (row.source === "captions") {
    return row.translated_from ? `YouTube's machine translation of the ${row.translated_from} captions` : "captions";
  }
  return row.model ? `speech recognition (${row.model})` : "speech recognition";
}

function cell(label, ...content) {
  const td = element("td", {}, ...content);
  td.dataset.label = label;
  return td;
}

async function showLibrary(offset) {
  const page = await viewData(`/v1/transcripts?offset=${offset}&limit=${PAGE_SIZE}`);
  if (!page) return;
  const rows = page.data.map((row) => element("tr", {},
    cell("Title", element("a", { href: `#/read/${encodeURIComponent(row.key)}`, textContent: row.title || row.url })),
    cell("From", origin(row)),
    cell("Duration", row.duration != null ? clock(row.duration) : "\u2013"),
    cell("Language", row.language || "\u2013"),
    cell("Added", row.created_at ? new Date(row.created_at).toLocaleString() : "\u2013")));
  $("#library tbody").replaceChildren(...rows);
  const last = Math.min(offset + page.data.length, page.total);
  $("#library-caption").textContent = page.total
    ? `Stored transcripts, newest first: ${offset + 1}\u2013${last} of ${page.total}`
    : "No transcripts yet: add some sources first.";
  $("#prev-page").disabled = offset === 0;
  $("#next-page").disabled = last >= page.total;
  $("#prev-page").onclick = () => { location.hash = `#/library?offset=${Math.max(0, offset - PAGE_SIZE)}`; };
  $("#next-page").onclick = () => { location.hash = `#/library?offset=${offset + PAGE_SIZE}`; };
  show("library");
}

// ---- Read -----------------------------------------------------------------------------------------

function youtubeId(transcript) {
  const key = transcript.key || "";
  return key.startsWith("youtube:") ? key.slice(8).split("|")[0] : null;
}

/** The player for a transcript: an audio element, or a YouTube embed made only when asked to play. */
function makePlayer(transcript, media) {
  const box = $("#player");
  const video = youtubeId(transcript);
  if (video) {
    box.replaceChildren(element("p", { className: "meta", textContent: "Click a time to play the video there." }));
    return (seconds) => {
      const src = `https://www.youtube-nocookie.com/embed/${encodeURIComponent(video)}`
        + `?start=${Math.floor(seconds)}&autoplay=1`;
      box.replaceChildren(element("iframe", { src, title: "YouTube player", allow: "autoplay; encrypted-media" }));
    };
  }
  if (!media || !/^(https?:|blob:)/.test(media)) {
    box.replaceChildren(element("p", { className: "meta", textContent: "The media is not available to play." }));
    return null;
  }
  const audio = element("audio", { controls: true, preload: "metadata", src: media });
  audio.setAttribute("aria-label", "Audio player");
  audio.addEventListener("error", () => say("The media could not be loaded for playing."));
  box.replaceChildren(audio);
  return (seconds, play = true) => {
    const cue = () => {
      audio.currentTime = seconds;
      if (play) audio.play().catch((error) => say(`The audio did not start: ${error.message}`));
    };
    if (audio.readyState >= HTMLMediaElement.HAVE_METADATA) cue();
    else audio.addEventListener("loadedmetadata", cue, { once: true });  // a seek before it would be lost
  };
}

/** The link to a stored transcript's English version, or to the original of an English one; null: none. */
function storedVersion(transcript) {
  if (!transcript.other_version) return null;
  const text = transcript.other_version.includes("+en|") ? "Read in English" : "Read the original";
  return { href: `#/read/${encodeURIComponent(transcript.other_version)}`, text };
}

function renderTranscript(transcript, media, at, downloads, version) {
  $("#read-title").textContent = transcript.title || transcript.url || "Transcript";
  const facts = [transcript.source ? origin(transcript) : null, transcript.language,
    transcript.duration != null ? clock(transcript.duration) : null, transcript.url].filter(Boolean);
  $("#read-meta").textContent = facts.join(" \u00b7 ");
  const other = $("#read-other");  // the other version: English, or the original
  other.hidden = !version;
  if (version) {
    other.href = version.href;
    other.textContent = version.text;
  }
  const seek = makePlayer(transcript, media);
  const items = transcript.segments.map((segment) => {
    const time = element("button", { type: "button", textContent: clock(segment.start) });
    time.setAttribute("aria-label", `Play from ${clock(segment.start)}`);
    time.disabled = !seek;
    time.addEventListener("click", () => seek(segment.start));
    const text = element("span", { className: "text" });
    if (segment.speaker) text.append(element("span", { className: "speaker", textContent: `${segment.speaker}:` }));
    text.append(segment.text.trim());
    const item = element("li", {}, time, text);
    item.dataset.start = segment.start;
    return item;
  });
  $("#segments").replaceChildren(...items);
  for (const button of document.querySelectorAll(".downloads button")) {
    button.onclick = () => downloads(button.dataset.format).catch((error) => say(reason(error.code, error.message)));
  }
  show("read");
  if (at != null) landOn(Number(at), items, seek);
}

/** Mark the segment playing at ``seconds`` and move there, with the player cued to that moment. */
function landOn(seconds, items, seek) {
  const current = items.filter((item) => Number(item.dataset.start) <= seconds + 0.01).pop() || items[0];
  if (!current) return;
  current.classList.add("current");
  current.setAttribute("aria-current", "true");
  current.scrollIntoView({ block: "center" });
  current.querySelector("button").focus();
  if (seek && $("#player audio")) seek(seconds, false);
}

function save(name, blob) {
  const link = element("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 0);
}

const EXTENSIONS = { text: "txt", srt: "srt", vtt: "vtt", json: "json" };

function fileName(transcript, format) {
  const base = (transcript.title || transcript.key || "transcript").replace(/[^\w.-]+/g, "_").slice(0, 80);
  return `${base}.${EXTENSIONS[format]}`;
}

async function showStored(id, at) {
  const transcript = await viewData(`/v1/transcripts/${encodeURIComponent(id)}`);
  if (!transcript) return;
  renderTranscript(transcript, transcript.url, at, async (format) => {
    const response = await api(`/v1/transcripts/${encodeURIComponent(id)}?response_format=${format}`);
    save(fileName(transcript, format), await response.blob());
  }, storedVersion(transcript));
}

function showUpload(n) {
  const upload = uploads[n];
  if (!upload) throw new Error("That upload is not in this tab any more; add the file again.");
  const transcript = { ...upload, source: "asr", model: null };
  renderTranscript(transcript, upload.media, null, async (format) => {
    const body = format === "json" ? JSON.stringify(upload, null, 2) : upload.text;
    save(fileName(upload, format), new Blob([body]));
  }, upload.other == null ? null
    : { href: `#/upload/${upload.other}`, text: upload.english ? "Read the original" : "Read in English" });
  for (const button of document.querySelectorAll(".downloads button")) {  // srt and vtt need a stored transcript
    button.hidden = button.dataset.format === "srt" || button.dataset.format === "vtt";
  }
}

// ---- Search ---------------------------------------------------------------------------------------

const UNMARKED = new Set(["a", "an", "and", "are", "at", "in", "is", "it", "of", "on", "or", "the", "to"]);

/** ``text`` with the query's words (whole words, not the commonest) in <mark>, built as nodes, never HTML. */
function highlighted(text, query) {
  const words = query.toLowerCase().split(/\W+/).filter((w) => w && !UNMARKED.has(w));
  if (!words.length) return [text];
  const pattern = new RegExp(`\\b(${words.join("|")})\\b`, "gi");
  return text.split(pattern).map((part, i) => (i % 2 ? element("mark", { textContent: part }) : part));
}

async function showSearch(query) {
  $("#q").value = query;
  $("#results").replaceChildren();
  show("search");
  if (!query) return;
  const found = await viewData(`/v1/search?q=${encodeURIComponent(query)}&k=10`);
  if (!found) return;
  const items = found.data.map((hit) => {
    const href = `#/read/${encodeURIComponent(hit.transcript_id)}?t=${hit.start}`;
    const title = element("a", { href, textContent: `${hit.title || hit.url} at ${clock(hit.start)}` });
    return element("li", {}, title, element("p", {}, ...highlighted(hit.text, query)));
  });
  $("#results").replaceChildren(...items);
  say(items.length ? `${items.length} passages found.` : "Nothing found.");
}

// ---- Live: the microphone to /v1/realtime (OpenAI's Realtime protocol), a caption line per turn ---------

const LIVE_RATE = 24000;  // the protocol's PCM16 rate; the AudioContext resamples the microphone to it
const ITEM = "conversation.item.input_audio_transcription";
let live = null;  // the session in progress: socket, audio graph, turns still awaited

function liveUrl(store) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime?intent=transcription${store ? "&store=true" : ""}`;
}

function base64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function captionLine(itemId) {
  const found = [...$("#captions").children].find((line) => line.dataset.item === itemId);
  if (found) return found;
  const line = element("li", { className: "pending" });
  line.dataset.item = itemId;
  $("#captions").append(line);
  return line;
}

/** A server event: deltas grow a grey line, ``completed`` settles it, failures and errors are said in words. */
function onLiveEvent(event) {
  if (event.type === "session.created" || event.type === "session.updated") {
    live.transcriptId = event.session.transcript_id;  // updated too once the first turn has picked the model
  }
  else if (event.type === "input_audio_buffer.speech_started") live.speaking = true;
  else if (event.type === "input_audio_buffer.speech_stopped") live.speaking = false;
  else if (event.type === "input_audio_buffer.committed") live.awaited.add(event.item_id);
  else if (event.type === `${ITEM}.delta`) captionLine(event.item_id).textContent += event.delta;
  else if (event.type === `${ITEM}.completed` || event.type === `${ITEM}.failed`) {
    const line = captionLine(event.item_id);
    line.className = event.type.endsWith("failed") ? "error" : "";
    line.textContent = event.transcript ?? reason(event.error?.code, event.error?.message);
    if (!line.textContent) line.remove();
    live.awaited.delete(event.item_id);
  } else if (event.type === "error" && !(live.stopping && event.error.code === "input_audio_buffer_commit_empty")) {
    $("#live-error").textContent = reason(event.error.code, event.error.message);  // (a stop just after a pause)
  }
  if (live.stopping && !live.awaited.size) live.socket.close(1000);
}

async function startLive() {
  $("#live-error").textContent = "";
  $("#live-kept").replaceChildren();
  $("#captions").replaceChildren();
  const store = $("#live-store").checked;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  const context = new AudioContext({ sampleRate: LIVE_RATE });
  await context.audioWorklet.addModule("/static/pcm-worklet.js");
  const key = sessionStorage.getItem(KEY_STORAGE);
  const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
  const socket = new WebSocket(liveUrl(store), protocols);
  live = { socket, stream, context, store, awaited: new Set(), speaking: false, stopping: false, transcriptId: null };
  socket.onopen = () => {
    socket.send(JSON.stringify({ type: "session.update", session: { type: "transcription", audio: { input: {
      format: { type: "audio/pcm", rate: LIVE_RATE },
      turn_detection: { type: "server_vad", silence_duration_ms: 500 } } } } }));
    const node = new AudioWorkletNode(context, "pcm16-chunks", { processorOptions: { chunk: LIVE_RATE / 10 } });
    node.port.onmessage = (message) => {
      if (socket.readyState !== WebSocket.OPEN) return;
      socket.send(JSON.stringify({ type: "input_audio_buffer.append", audio: base64(new Uint8Array(message.data)) }));
    };
    context.createMediaStreamSource(stream).connect(node);
    $("#live-stop").disabled = false;
  };
  socket.onmessage = (message) => onLiveEvent(JSON.parse(message.data));
  socket.onclose = (event) => endLive(event);
  $("#live-start").disabled = true;
  say("Listening.");
}

function stopAudio(session) {
  for (const track of session.stream.getTracks()) track.stop();
  session.context.close();
}

/** Stop listening; the turn being spoken is committed, and the socket closes once every turn has its line. */
function stopLive() {
  $("#live-stop").disabled = true;
  stopAudio(live);
  live.stopping = true;
  if (live.speaking) live.socket.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
  else if (!live.awaited.size) live.socket.close(1000);
}

function endLive(event) {
  const session = live;
  live = null;
  if (!session.stopping) stopAudio(session);
  $("#live-start").disabled = false;
  $("#live-stop").disabled = true;
  say("");
  if (event.code !== 1000 && event.code !== 1005) {
    $("#live-error").textContent = event.reason || `The connection ended (${event.code}).`;
  } else if (session.store && session.transcriptId && $("#captions").children.length) {
    showKept(session.transcriptId).catch((error) => { $("#live-kept").textContent = reason(error.code, error.message); });
  }
}

/** Once the store has the session's transcript (kept as the session closes), a link to read it. The newest
 * transcripts are listed until it is among them: asking for it by id would log a 404 in the console. */
async function showKept(transcriptId) {
  $("#live-kept").textContent = "Keeping the transcript\u2026";
  for (let attempt = 0; attempt < 60; attempt++) {
    const newest = await apiJson(`/v1/transcripts?offset=0&limit=${PAGE_SIZE}`);
    if (newest.data.some((row) => row.key === transcriptId)) {
      $("#live-kept").replaceChildren("Kept in the library: ", element("a", {
        href: `#/read/${encodeURIComponent(transcriptId)}`, textContent: "read it" }));
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  $("#live-kept").textContent = "The transcript did not reach the library.";
}

function onLiveStart() {
  startLive().catch((error) => {
    if (live) stopAudio(live);
    live = null;
    $("#live-start").disabled = false;
    $("#live-error").textContent = `The microphone could not be used: ${error.message}`;
  });
}

// ---- Start ----------------------------------------------------------------------------------------

async function start() {
  $("#key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORAGE, $("#key-input").value.trim());
    $("#key-input").value = "";
    $("#key-error").textContent = "";
    location.hash = afterKey === "#/key" ? "#/add" : afterKey;
  });
  $("#add-form").addEventListener("submit", onAdd);
  $("#live-start").addEventListener("click", onLiveStart);
  $("#live-stop").addEventListener("click", stopLive);
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    location.hash = `#/search?q=${encodeURIComponent($("#q").value.trim())}`;
  });
  const drop = $("#drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", onDrop);
  window.addEventListener("hashchange", () => {
    for (const button of document.querySelectorAll(".downloads button")) button.hidden = false;
    route();
  });
  const health = await (await fetch("/healthz")).json();
  keysRequired = Boolean(health.api_key_required);
  $("#diarize-row").hidden = !("Diarizer" in (health.deployments || {}));
  await route();
  document.body.dataset.ready = "true";
}

start();
