// A small, safe Markdown renderer for model answers: it builds DOM nodes and sets text with
// textContent, never innerHTML, so nothing a model writes (<script>, <img onerror=...>) can run.
// Covers what chat models use: fenced code, headings, lists, quotes, rules, paragraphs, and inline
// code, bold, italic and http(s) links. An unclosed fence (mid-stream) renders as code to the end.
"use strict";

window.renderMarkdown = (() => {
  const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^\s{0,3}>\s?/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([\s\S]*?[^\s*])\*|\[([^\]\n]+)\]\(([^)\s]+)\)/g;

  function el(tag, className) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    return node;
  }

  function safeLink(href) {
    try {
      const url = new URL(href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      if (m[1]) {
        parent.append(Object.assign(el("code"), {textContent: m[2].replace(/^ (.*) $/s, "$1")}));
      } else if (m[3] !== undefined) {
        inline(m[3], parent.appendChild(el("strong")));
      } else if (m[4] !== undefined) {
        inline(m[4], parent.appendChild(el("em")));
      } else {
        const href = safeLink(m[6]);
        if (href) {
          const a = el("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          inline(m[5], a);
          parent.append(a);
        } else {
          parent.append(m[0]);
        }
      }
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  function lines(text, parent) {
    // paragraph lines keep their breaks, as chat answers expect
    text.split("\n").forEach((line, i) => {
      if (i) parent.append(el("br"));
      inline(line, parent);
    });
  }

  const startsBlock = (line) =>
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);

  function blocks(text, parent) {
    const rows = text.split("\n");
    let i = 0;
    while (i < rows.length) {
      const line = rows[i];
      let m;
      if ((m = FENCE.exec(line))) {
        const body = [];
        for (i++; i < rows.length && !rows[i].trim().startsWith(m[1]); i++) body.push(rows[i]);
        i++;
        const pre = el("pre", "md-code");
        const code = el("code");
        if (m[2]) {
          pre.dataset.lang = m[2];
          pre.append(Object.assign(el("span", "md-lang"), {textContent: m[2]}));
        }
        code.textContent = body.join("\n");
        pre.append(code);
        parent.append(pre);
      } else if ((m = HEADING.exec(line))) {
        inline(m[2], parent.appendChild(el(`h${Math.min(m[1].length + 2, 6)}`)));
        i++;
      } else if (RULE.test(line)) {
        parent.append(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const quoted = [];
        for (; i < rows.length && QUOTE.test(rows[i]); i++) quoted.push(rows[i].replace(QUOTE, ""));
        blocks(quoted.join("\n"), parent.appendChild(el("blockquote")));
      } else if ((m = ITEM.exec(line))) {
        const ordered = /\d/.test(m[2]);
        const list = el(ordered ? "ol" : "ul");
        if (ordered && parseInt(m[2], 10) !== 1) list.start = parseInt(m[2], 10);
        while (i < rows.length) {
          const item = ITEM.exec(rows[i]);
          if (!item || /\d/.test(item[2]) !== ordered) break;
          const text = [item[3]];
          // indented lines that start no block continue the item
          for (i++; i < rows.length && /^\s{2,}\S/.test(rows[i]) && !ITEM.test(rows[i]); i++) {
            text.push(rows[i].trim());
          }
          lines(text.join("\n"), list.appendChild(el("li")));
        }
        parent.append(list);
      } else if (!line.trim()) {
        i++;
      } else {
        const para = [];
        for (; i < rows.length && rows[i].trim() && (!para.length || !startsBlock(rows[i])); i++) {
          para.push(rows[i]);
        }
        lines(para.join("\n"), parent.appendChild(el("p")));
      }
    }
  }

  return (text, container) => {
    container.replaceChildren();
    blocks(String(text), container);
  };
})();
