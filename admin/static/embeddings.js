// Fortress embedding playground: the few behaviours the server-rendered form lacks. The form posts
// with htmx (or plainly without JavaScript); playkey.js fills its key field and model pickers.
"use strict";

(() => {
  const result = document.getElementById("pg-result");
  const labels = document.getElementById("pg-labels");
  if (!result || !labels) return;
  labels.closest(".pg-check").hidden = false;
  const apply = () => result.classList.toggle("pg-nolabels", !labels.checked);
  labels.addEventListener("change", apply);
  apply();
  for (const button of document.querySelectorAll("[data-sets]")) {
    button.hidden = false;
    button.addEventListener("click", () => {
      for (const box of document.querySelectorAll("input[name=sets]")) box.checked = button.dataset.sets === "all";
    });
  }
})();
