// The seesay web page. It talks only to this server's public API: GET /v1/models,
// GET /v1/seesay/limits and POST /v1/chat/completions (streamed), as any OpenAI client would.
import { requestBudget, targetSize } from "/web/budget.js";
import { EXAMPLE_QUESTIONS, TEXT, initialLanguage } from "/web/i18n.js";

const $ = (id) => document.getElementById(id);
const state = {
  lang: initialLanguage(),
  model: null,
  limits: null,
  picture: null, // { dataUrl, width, height }
  messages: [], // the conversation as chat messages; the first user turn carries the picture
  busy: false,
};

function t(key, ...args) {
  const value = TEXT[state.lang][key];
  return typeof value === "function" ? value(...args) : value;
}

function headers() {
  const key = sessionStorage.getItem("seesay-api-key");
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

// --- interface language -------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  $("language").value = state.lang;
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  $("preview").alt = t("previewAlt");
  renderGallery();
  renderPicture();
  document.title = `seesay – ${t("tagline")}`;
}

// --- server facts -------------------------------------------------------------------------

async function loadServer() {
  const [models, limits] = await Promise.all([
    fetch("/v1/models", { headers: headers() }), fetch("/v1/seesay/limits", { headers: headers() })]);
  if (models.status === 401 || limits.status === 401) {
    $("key-section").hidden = false;
    showError("ask-error", { code: "invalid_api_key" });
    return false;
  }
  if (!models.ok || !limits.ok) throw new Error(`server answered ${models.status}/${limits.status}`);
  state.model = (await models.json()).data[0].id;
  state.limits = await limits.json();
  const budget = $("budget");
  const tile = state.limits.factor ** 2;
  budget.min = String(tile);
  budget.step = String(tile);
  budget.max = String(state.limits.max_pixels);
  budget.value = String(state.limits.max_pixels);
  $("ask-error").textContent = "";
  renderPicture();
  return true;
}

// --- the picture ----------------------------------------------------------------------------

async function renderGallery() {
  const list = $("gallery");
  if (!list.dataset.loaded) {
    list.dataset.loaded = "1";
    const examples = await (await fetch("/web/examples.json")).json();
    for (const example of examples) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.name = example.name;
      button.dataset.url = example.url;
      const image = document.createElement("img");
      image.src = example.url;
      image.alt = "";
      button.append(image);
      button.addEventListener("click", () => useExample(example.url));
      item.append(button);
      list.append(item);
    }
  }
  for (const button of list.querySelectorAll("button")) button.setAttribute("aria-label", t("galleryItem", button.dataset.name));
}

async function useExample(url) {
  const blob = await (await fetch(url)).blob();
  await usePicture(new File([blob], url.split("/").pop(), { type: blob.type || "image/png" }));
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function decode(dataUrl) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("not decodable"));
    image.src = dataUrl;
  });
}

async function usePicture(file) {
  $("picture-error").textContent = "";
  if (!file.type.startsWith("image/")) {
    $("picture-error").textContent = t("notImage");
    return;
  }
  const dataUrl = await readAsDataUrl(file);
  let image;
  try {
    image = await decode(dataUrl);
  } catch {
    $("picture-error").textContent = t("unreadable");
    return;
  }
  state.picture = { dataUrl, width: image.naturalWidth, height: image.naturalHeight, image };
  state.messages = [];
  $("conversation").replaceChildren();
  $("preview").src = dataUrl;
  $("views").hidden = false;
  $("new-picture").hidden = false;
  renderPicture();
  $("question").focus();
}

function currentBudget() {
  return requestBudget(state.limits, Number($("budget").value));
}

function renderPicture() {
  if (state.limits) $("budget-value").textContent = t("budgetValue", Number($("budget").value));
  if (!state.picture || !state.limits) return;
  const { width, height, image } = state.picture;
  $("preview-caption").textContent = t("original", width, height);
  const factor = state.limits.factor;
  const [w, h] = targetSize(width, height, currentBudget());
  const tokens = (w / factor) * (h / factor);
  const canvas = $("model-view");
  canvas.width = w;
  canvas.height = h;
  canvas.dataset.width = String(w);
  canvas.dataset.height = String(h);
  canvas.dataset.tokens = String(tokens);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, w, h);
  // One cell per visual token; dark under light, so the grid shows on any picture.
  context.beginPath();
  for (let x = factor; x < w; x += factor) { context.moveTo(x + 0.5, 0); context.lineTo(x + 0.5, h); }
  for (let y = factor; y < h; y += factor) { context.moveTo(0, y + 0.5); context.lineTo(w, y + 0.5); }
  context.lineWidth = 2;
  context.strokeStyle = "rgba(0, 0, 0, 0.45)";
  context.stroke();
  context.lineWidth = 1;
  context.strokeStyle = "rgba(255, 255, 255, 0.9)";
  context.stroke();
  canvas.setAttribute("aria-label", t("modelViewLabel", w, h, tokens));
  $("model-size").textContent = t("modelSize", w, h);
  $("model-tokens").textContent = t("modelTokens", tokens);
}

function newPicture() {
  state.picture = null;
  state.messages = [];
  $("conversation").replaceChildren();
  $("views").hidden = true;
  $("new-picture").hidden = true;
  $("file-input").value = "";
  $("file-input").focus();
}

// --- asking -------------------------------------------------------------------------------

function showError(where, error) {
  const words = TEXT[state.lang].errors;
  $(where).textContent = words[error.code] || `${words.other} (${error.message || error.code})`;
}

function addTurn(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("strong");
  who.textContent = `${role === "user" ? t("you") : t("seesay")}: `;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  $("conversation").append(item);
  return item;
}

// Reads a server-sent event stream; calls onEvent with each event's parsed data until [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data: ")).map((line) => line.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

function userMessage(question) {
  if (state.messages.length > 0) return { role: "user", content: question };
  return { role: "user", content: [
    { type: "image_url", image_url: { url: state.picture.dataUrl } },
    { type: "text", text: question },
  ] };
}

async function ask(event) {
  event.preventDefault();
  $("ask-error").textContent = "";
  const question = $("question").value.trim();
  if (!state.picture) { $("ask-error").textContent = t("needPicture"); return; }
  if (!question) { $("ask-error").textContent = t("needQuestion"); return; }
  if (!state.limits) { showError("ask-error", { code: "invalid_api_key" }); return; }
  if (state.busy) return;
  state.busy = true;
  $("ask").disabled = true;
  $("ask").textContent = t("asking");
  const message = userMessage(question);
  const body = {
    model: state.model, messages: [...state.messages, message], stream: true,
    stream_options: { include_usage: true }, temperature: Number($("temperature").value),
    seesay: { max_pixels: Number($("budget").value) },
  };
  const started = performance.now();
  const turn = addTurn("user", question);
  const answer = addTurn("assistant", "");
  answer.setAttribute("aria-busy", "true");
  const text = answer.querySelector(".text");
  let finish = null;
  let usage = null;
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      const error = await response.json().catch(() => ({ error: { code: "other", message: response.statusText } }));
      if (response.status === 401) $("key-section").hidden = false;
      throw error.error;
    }
    const cache = response.headers.get("X-Seesay-Cache") || "?";
    await readEvents(response, (data) => {
      if (data.error) throw data.error;
      if (data.usage) usage = data.usage;
      for (const choice of data.choices || []) {
        if (choice.delta && choice.delta.content) text.textContent += choice.delta.content;
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    });
    state.messages.push(message, { role: "assistant", content: text.textContent });
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = t("meta", {
      seconds: ((performance.now() - started) / 1000).toFixed(2), prompt: usage ? usage.prompt_tokens : "?",
      image: usage ? usage.prompt_tokens_details.image_tokens : "?", completion: usage ? usage.completion_tokens : "?",
      finish, cache });
    meta.dataset.imageTokens = usage ? String(usage.prompt_tokens_details.image_tokens) : "";
    meta.dataset.cache = cache;
    meta.dataset.finish = finish || "";
    answer.append(meta);
    answer.dataset.done = "true";
    $("live").textContent = text.textContent;
    $("question").value = "";
  } catch (error) {
    turn.remove();
    answer.remove();
    showError("ask-error", error && error.code ? error : { code: "network", message: String(error) });
  } finally {
    answer.removeAttribute("aria-busy");
    state.busy = false;
    $("ask").disabled = false;
    $("ask").textContent = t("ask");
    $("question").focus();
  }
}

// --- wiring -------------------------------------------------------------------------------

function wire() {
  $("language").addEventListener("change", () => {
    state.lang = $("language").value;
    sessionStorage.setItem("seesay-language", state.lang);
    applyLanguage();
  });
  $("file-input").addEventListener("change", () => { if ($("file-input").files[0]) usePicture($("file-input").files[0]); });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("dragging"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files[0]) usePicture(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const file = [...event.clipboardData.files].find((item) => item.type.startsWith("image/"));
    if (file) { event.preventDefault(); usePicture(file); }
  });
  $("budget").addEventListener("input", renderPicture);
  $("new-picture").addEventListener("click", newPicture);
  $("ask-form").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); $("ask-form").requestSubmit(); }
  });
  $("save-key").addEventListener("click", async () => {
    sessionStorage.setItem("seesay-api-key", $("api-key").value.trim());
    if (await loadServer()) $("key-section").hidden = true;
  });
  const examples = $("examples");
  for (const question of EXAMPLE_QUESTIONS) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.textContent = question;
    button.addEventListener("click", () => { $("question").value = question; $("question").focus(); });
    item.append(button);
    examples.append(item);
  }
}

wire();
applyLanguage();
loadServer()
  .then(() => { document.body.dataset.ready = "true"; })
  .catch((error) => { showError("ask-error", { code: "network", message: String(error) }); document.body.dataset.ready = "error"; });
