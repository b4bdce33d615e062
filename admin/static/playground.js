// Fortress chat playground: conversation in localStorage, answers streamed through the admin's relay,
// rendered by markdown.js (DOM nodes only: model text never becomes HTML), stop, images, export/import,
// and web search: the relay's stream then starts with {"sources": [...]}, shown as links under the answer.
"use strict";

(() => {
  const STORE = "fortress.playground.chat";
  const OPTION_INPUTS = [...document.querySelectorAll("[data-option]")];
  const $ = (id) => document.getElementById(id);
  const log = $("pg-log");
  const form = $("pg-form");
  if (!log || !form) return; // a viewer's page has no chat
  const input = $("pg-input");
  const model = $("pg-model");
  const system = $("pg-system");
  const sendButton = $("pg-send");
  const stopButton = $("pg-stop");
  const status = $("pg-status");
  const imageList = $("pg-images");
  const webSearch = $("pg-web-search");

  let conversation = load();
  let pendingImages = []; // [{type, data}] data = base64 without the data: prefix
  let controller = null; // the AbortController of the answer being streamed

  function blank() {
    return {version: 1, model: "", system: "", options: {}, messages: []};
  }

  function valid(c) {
    return c && typeof c === "object" && Array.isArray(c.messages) && c.messages.every((m) =>
      m && ["user", "assistant", "system"].includes(m.role) && typeof m.content === "string" &&
      (m.images === undefined || (Array.isArray(m.images) && m.images.every((i) => typeof i === "string"))) &&
      (m.sources === undefined || Array.isArray(m.sources)));
  }

  // A source's address as a link target: absolute http(s) only (never javascript:, data: or relative).
  function safeUrl(text) {
    try {
      const url = new URL(String(text));
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORE) || "null");
      return valid(saved) ? {...blank(), ...saved} : blank();
    } catch {
      return blank();
    }
  }

  function save() {
    conversation.model = model.value;
    conversation.system = system.value;
    conversation.options = readOptions();
    try {
      localStorage.setItem(STORE, JSON.stringify(conversation));
    } catch {
      say("This conversation is too large to keep in the browser (images?): export it to keep it.");
    }
  }

  function say(text) {
    status.textContent = text;
  }

  function readOptions() {
    const options = {};
    for (const box of OPTION_INPUTS) if (box.value.trim() !== "") options[box.dataset.option] = Number(box.value);
    return options;
  }

  function restoreSettings() {
    system.value = conversation.system || "";
    for (const box of OPTION_INPUTS) {
      const value = conversation.options?.[box.dataset.option];
      box.value = value === undefined ? "" : value;
    }
    if ([...model.options].some((o) => o.value === conversation.model)) model.value = conversation.model;
  }

  // ---- rendering ----------------------------------------------------------------------------------

  function thumbnail(data, type, onRemove) {
    const item = document.createElement("li");
    const img = document.createElement("img");
    img.src = `data:${type || "image/png"};base64,${data}`;
    img.alt = "attached image";
    item.append(img);
    if (onRemove) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Remove image";
      remove.addEventListener("click", onRemove);
      item.append(remove);
    }
    return item;
  }

  function statsText(s) {
    if (!s) return "";
    const parts = [];
    if (s.model) parts.push(s.model);
    if (s.prompt_eval_count !== undefined) parts.push(`${s.prompt_eval_count} prompt tokens`);
    if (s.eval_count !== undefined) parts.push(`${s.eval_count} answer tokens`);
    if (s.eval_count && s.eval_duration) parts.push(`${(s.eval_count / (s.eval_duration / 1e9)).toFixed(1)} tokens/s`);
    if (s.first_token_ms !== undefined) parts.push(`first token after ${(s.first_token_ms / 1000).toFixed(2)} s`);
    if (s.total_duration) parts.push(`${(s.total_duration / 1e9).toFixed(2)} s in total`);
    else if (s.elapsed_ms !== undefined) parts.push(`${(s.elapsed_ms / 1000).toFixed(2)} s`);
    if (s.stopped) parts.push("stopped");
    return parts.join(" · ");
  }

  function bubble(message) {
    const item = document.createElement("li");
    item.className = `msg ${message.role}`;
    const who = document.createElement("p");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : message.role === "assistant" ? "Model" : "System";
    const body = document.createElement("div");
    body.className = "body";
    item.append(who, body);
    if (message.images?.length) {
      const list = document.createElement("ul");
      list.className = "pg-images";
      message.images.forEach((data, i) => list.append(thumbnail(data, message.image_types?.[i])));
      item.append(list);
    }
    const sources = document.createElement("nav");
    sources.className = "pg-sources";
    sources.setAttribute("aria-label", "Sources");
    sources.hidden = true;
    const sourcesTitle = document.createElement("p");
    sourcesTitle.className = "who";
    sourcesTitle.textContent = "Sources";
    const sourceList = document.createElement("ol");
    sources.append(sourcesTitle, sourceList);
    const stats = document.createElement("p");
    stats.className = "stats";
    const error = document.createElement("p");
    error.className = "flash error";
    error.hidden = true;
    error.setAttribute("role", "alert");
    item.append(sources, stats, error);
    const view = {item, body, sources, sourceList, stats, error};
    paint(view, message);
    return view;
  }

  function paint(view, message) {
    if (message.role === "assistant") window.renderMarkdown(message.content, view.body);
    else view.body.textContent = message.content; // the admin's own words stay exactly as typed
    paintSources(view, message.sources);
    view.stats.textContent = statsText(message.stats);
    if (message.error) {
      view.error.textContent = message.error;
      view.error.hidden = false;
    }
  }

  function paintSources(view, sources) {
    const links = [];
    for (const source of Array.isArray(sources) ? sources : []) {
      const href = safeUrl(source?.url);
      if (!href) continue;
      const link = document.createElement("a");
      link.href = href;
      link.textContent = typeof source.title === "string" && source.title.trim() ? source.title : href;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      const item = document.createElement("li");
      item.append(link);
      links.push(item);
    }
    view.sourceList.replaceChildren(...links);
    view.sources.hidden = !links.length;
  }

  function renderAll() {
    log.replaceChildren(...conversation.messages.map((m) => bubble(m).item));
    log.lastElementChild?.scrollIntoView({block: "end"});
  }

  function renderPending() {
    imageList.replaceChildren(...pendingImages.map((image, i) =>
      thumbnail(image.data, image.type, () => {
        pendingImages.splice(i, 1);
        renderPending();
      })));
  }

  // ---- images -------------------------------------------------------------------------------------

  function addFiles(files) {
    for (const file of files) {
      if (!file.type.startsWith("image/")) {
        say(`${file.name} is not an image.`);
        continue;
      }
      const reader = new FileReader();
      reader.onload = () => {
        const [head, data] = String(reader.result).split(",", 2);
        pendingImages.push({type: head.slice(5).split(";")[0], data});
        renderPending();
        say(`${pendingImages.length} image${pendingImages.length === 1 ? "" : "s"} attached.`);
      };
      reader.readAsDataURL(file);
    }
  }

  $("pg-file").addEventListener("change", (event) => {
    addFiles(event.target.files);
    event.target.value = "";
  });
  input.addEventListener("paste", (event) => {
    const files = [...(event.clipboardData?.files || [])];
    if (files.length) {
      event.preventDefault();
      addFiles(files);
    }
  });
  for (const target of [input, log]) {
    target.addEventListener("dragover", (event) => event.preventDefault());
    target.addEventListener("drop", (event) => {
      event.preventDefault();
      addFiles(event.dataTransfer?.files || []);
    });
  }

  // ---- sending and streaming ----------------------------------------------------------------------

  function busy(on) {
    sendButton.disabled = on;
    stopButton.disabled = !on;
  }

  async function send() {
    const text = input.value.trim();
    if (!text && !pendingImages.length) return say("Write a message first.");
    if (!model.value) return say("Choose a model first (the key may use none yet).");
    const user = {role: "user", content: text};
    if (pendingImages.length) {
      user.images = pendingImages.map((i) => i.data);
      user.image_types = pendingImages.map((i) => i.type);
    }
    conversation.messages.push(user);
    log.append(bubble(user).item);
    input.value = "";
    pendingImages = [];
    renderPending();
    const answer = {role: "assistant", content: "", stats: {model: model.value}};
    const view = bubble(answer);
    view.item.classList.add("streaming");
    log.append(view.item);
    save();
    busy(true);
    const searching = Boolean(webSearch && !webSearch.disabled && webSearch.checked);
    say(searching ? "Searching the web, then answering…" : "Answering…");
    controller = new AbortController();
    const started = performance.now();
    let scheduled = false;
    const repaint = () => {
      if (scheduled) return;
      scheduled = true;
      requestAnimationFrame(() => {
        scheduled = false;
        paint(view, answer);
        view.item.scrollIntoView({block: "end"});
      });
    };
    const history = conversation.messages.filter((m) => !m.error || m.content).map((m) => {
      const out = {role: m.role, content: m.content};
      if (m.images) out.images = m.images;
      return out;
    });
    try {
      const response = await window.PlayKey.post("/playground/chat",
        {model: model.value, system: system.value, options: readOptions(), messages: history, web_search: searching},
        controller.signal);
      if (!response.ok) {
        let message = `HTTP ${response.status}`;
        try {
          const data = await response.json();
          message = data.error || data.detail || message;
        } catch { /* not JSON: keep the status */ }
        answer.error = message;
      } else {
        await readStream(response, answer, started, repaint);
      }
    } catch (error) {
      if (error.name === "AbortError") answer.stats.stopped = true;
      else answer.error = `The admin did not answer: ${error.message}`;
    }
    answer.stats.elapsed_ms = Math.round(performance.now() - started);
    controller = null;
    view.item.classList.remove("streaming");
    paint(view, answer);
    conversation.messages.push(answer);
    save();
    busy(false);
    say(answer.error ? "The answer failed." : answer.stats.stopped ? "Stopped." : "Done.");
    input.focus();
  }

  async function readStream(response, answer, started, repaint) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const take = (line) => {
      if (!line.trim()) return;
      let chunk;
      try {
        chunk = JSON.parse(line);
      } catch {
        answer.error = "The proxy sent a line that is not JSON.";
        return;
      }
      if (chunk.error) {
        answer.error = String(chunk.error);
        return;
      }
      if (chunk.sources) { // the relay's first line when the web was searched
        answer.sources = chunk.sources.filter((s) => s && safeUrl(s.url))
          .map((s) => ({title: String(s.title || ""), url: safeUrl(s.url)}));
        repaint();
        return;
      }
      if (chunk.model) answer.stats.model = chunk.model; // the model that answered ("auto" names its choice)
      const piece = chunk.message?.content || "";
      if (piece && answer.stats.first_token_ms === undefined) {
        answer.stats.first_token_ms = Math.round(performance.now() - started);
      }
      answer.content += piece;
      if (chunk.done) {
        for (const k of ["prompt_eval_count", "eval_count", "total_duration", "load_duration",
          "prompt_eval_duration", "eval_duration", "done_reason"]) {
          if (chunk[k] !== undefined) answer.stats[k] = chunk[k];
        }
      }
      repaint();
    };
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      const parts = buffer.split("\n");
      buffer = parts.pop();
      parts.forEach(take);
    }
    take(buffer + decoder.decode());
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!controller) send();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  stopButton.addEventListener("click", () => controller?.abort());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) controller.abort();
  });

  // ---- history ------------------------------------------------------------------------------------

  $("pg-new").addEventListener("click", () => {
    if (controller) controller.abort();
    if (conversation.messages.length && !window.confirm("Start a new conversation? Export this one first to keep it.")) return;
    conversation = {...blank(), model: model.value, system: system.value, options: readOptions()};
    save();
    renderAll();
    say("New conversation.");
  });

  $("pg-export").addEventListener("click", () => {
    save();
    const blob = new Blob([JSON.stringify({...conversation, exported_at: new Date().toISOString()}, null, 2)],
      {type: "application/json"});
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = `fortress-chat-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say(`Exported ${conversation.messages.length} messages.`);
  });

  $("pg-import").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    let data;
    try {
      data = JSON.parse(await file.text());
    } catch {
      return say(`${file.name} is not JSON.`);
    }
    if (!valid(data)) return say(`${file.name} is not a conversation exported from this playground.`);
    if (controller) controller.abort();
    conversation = {...blank(), ...data};
    delete conversation.exported_at;
    restoreSettings();
    save();
    renderAll();
    say(`Imported ${conversation.messages.length} messages from ${file.name}.`);
  });

  for (const box of [system, model, ...OPTION_INPUTS]) box.addEventListener("change", save);
  document.addEventListener("playground:models", restoreSettings);
  restoreSettings();
  renderAll();
})();
