// Fortress admin: the few behaviours plain HTML lacks. Loaded as a file, so the CSP needs no inline script.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const field = document.querySelector(button.dataset.copy);
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
  } catch {
    document.execCommand("copy");
  }
  button.textContent = "Copied";
});

// PNG export of an analytics chart: the inline SVG, its theme colours copied from the computed style
// into attributes (an SVG drawn as an image sees no page CSS), drawn on a canvas at twice its shown size.
const PAINT = ["fill", "fill-opacity", "stroke", "stroke-width", "font-family", "font-size", "font-weight"];

function standalone(svg) {
  const copy = svg.cloneNode(true);
  const originals = svg.querySelectorAll("*");
  copy.querySelectorAll("*").forEach((el, i) => {
    if (el.tagName === "title") return;
    const style = getComputedStyle(originals[i]);
    for (const name of PAINT) el.setAttribute(name, style.getPropertyValue(name));
  });
  const box = svg.getBoundingClientRect();
  copy.setAttribute("width", box.width);
  copy.setAttribute("height", box.height);
  return { xml: new XMLSerializer().serializeToString(copy), width: box.width, height: box.height };
}

async function downloadPng(button) {
  const { xml, width, height } = standalone(document.querySelector(button.dataset.png));
  const image = new Image();
  image.src = "data:image/svg+xml;charset=utf-8," + encodeURIComponent(xml);
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * 2);
  canvas.height = Math.round(height * 2);
  canvas.getContext("2d").drawImage(image, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = button.dataset.filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-png]");
  if (!button) return;
  downloadPng(button).catch((error) => {
    console.error(error);
    button.textContent = "Could not draw the PNG";
  });
});
