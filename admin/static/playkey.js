// Fortress playground: the key panel and model pickers shared by the chat and embedding pages.
// A pasted key lives in this tab's sessionStorage only and travels to this admin with each request;
// the stored playground key never reaches the page at all (the admin uses it server-side).
"use strict";

window.PlayKey = (() => {
  const STORE = "fortress.playground.key";
  const KEY_SHAPE = /^fk_[a-z0-9]{8}_[A-Za-z0-9]{32,128}$/;
  const panel = document.getElementById("pg-key");
  const csrf = panel ? panel.dataset.csrf : "";
  const status = document.getElementById("pg-key-status");
  const field = document.getElementById("pg-key-field"); // the embedding form's hidden key field

  const pasted = () => sessionStorage.getItem(STORE) || "";

  function show() {
    const key = pasted();
    if (field) field.value = key;
    if (!status) return;
    if (key) status.textContent = `Using the pasted key fk_${key.slice(3, 11)}_… (this browser tab only).`;
    else if (document.querySelector("#pg-key-stored code")) status.textContent = "Using your stored playground key.";
    else status.textContent = "No key yet: create a playground key or paste one.";
  }

  function post(url, body, signal) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({...body, key: pasted()}),
      signal,
    });
  }

  function fill(select, models) {
    const keep = select.value;
    const optional = select.hasAttribute("data-optional");
    const list = select.hasAttribute("data-embedding") || optional
      ? [...models].sort((a, b) => Number(b.embedding) - Number(a.embedding))
      : models;
    const options = list.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.size ? `${m.name} (${m.size})` : m.name;
      return option;
    });
    if (optional) {
      const none = document.createElement("option");
      none.value = "";
      none.textContent = "(none)";
      options.unshift(none);
    }
    select.replaceChildren(...options);
    if ([...select.options].some((o) => o.value === keep)) select.value = keep;
  }

  async function loadModels() {
    const note = document.getElementById("pg-models-status");
    if (note) note.textContent = "Loading the models this key may use…";
    let data;
    try {
      const response = await post("/playground/models", {});
      data = await response.json();
    } catch (error) {
      data = {error: `the admin did not answer (${error.message})`};
    }
    if (data.error) {
      if (note) note.textContent = data.error;
      return;
    }
    for (const select of document.querySelectorAll("select[data-models]")) fill(select, data.models);
    if (note) note.textContent = data.models.length
      ? `${data.models.length} model${data.models.length === 1 ? "" : "s"} available to this key.`
      : "This key may use no model.";
    document.dispatchEvent(new CustomEvent("playground:models"));
  }

  const input = document.getElementById("pg-paste");
  document.getElementById("pg-paste-use")?.addEventListener("click", () => {
    const key = input.value.trim();
    if (!KEY_SHAPE.test(key)) {
      status.textContent = "That does not look like a Fortress key (fk_<id>_<secret>).";
      return;
    }
    sessionStorage.setItem(STORE, key);
    input.value = "";
    show();
    loadModels();
  });
  document.getElementById("pg-paste-forget")?.addEventListener("click", () => {
    sessionStorage.removeItem(STORE);
    show();
    loadModels();
  });
  document.getElementById("pg-reload-models")?.addEventListener("click", loadModels);

  show();
  if (pasted()) loadModels();
  return {post, pasted, loadModels};
})();
