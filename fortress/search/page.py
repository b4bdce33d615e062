"""A fetched page read into web_fetch's answer: title, readable text and outbound links (pure).

HTML goes through the standard library's `html.parser`: script, style and other non-text elements
are skipped, block elements (and line breaks inside <pre>) make the lines, other whitespace is
collapsed, empty lines are dropped, `<base href>` is honoured for links, and only absolute http(s)
links are kept (fragment dropped, first occurrence wins).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

MAX_LINKS = 200
_SKIP = frozenset({"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas"})
_BLOCK = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
        "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class _Reader(HTMLParser):
    def __init__(self, base: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base = base
        self.title: list[str] = []
        self.text: list[str] = []
        self.links: dict[str, None] = {}
        self._skipping: list[str] = []  # open elements whose content is not text
        self._in_title = False
        self._title_done = False
        self._pre = 0  # inside <pre>: line breaks in the text are kept

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skipping.append(tag)
            return
        if tag == "title" and not self._title_done:
            self._in_title = True
        elif tag == "base" and not self.links:
            href = dict(attrs).get("href")
            if href:
                self.base = urljoin(self.base, href.strip())
        elif tag == "a":
            self._link(dict(attrs).get("href"))
        elif tag == "pre":
            self._pre += 1
        if tag in _BLOCK:
            self.text.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _SKIP:  # <svg/> and the like open nothing
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._skipping:
            if tag in self._skipping:
                while self._skipping and self._skipping.pop() != tag:
                    pass
            return
        if tag == "title" and self._in_title:
            self._in_title = False
            self._title_done = True
        elif tag == "pre" and self._pre:
            self._pre -= 1
        if tag in _BLOCK:
            self.text.append("\n")

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if not self._pre:  # a line break in HTML source is a space; blocks make the lines
            data = data.replace("\n", " ")
        (self.title if self._in_title else self.text).append(data)

    def _link(self, href: str | None) -> None:
        if not href or len(self.links) >= MAX_LINKS:
            return
        url, _ = urldefrag(urljoin(self.base, href.strip()))
        if url.startswith(("http://", "https://")):
            self.links.setdefault(url, None)


def _tidy(pieces: list[str]) -> str:
    """One line per block of text, spaces collapsed, empty lines dropped."""
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(pieces).split("\n"))
    return "\n".join(line for line in lines if line)


def read_html(markup: str, url: str) -> dict[str, object]:
    """{"title", "content", "links"} of an HTML page fetched from `url` (the final URL, after redirects)."""
    reader = _Reader(url)
    reader.feed(markup)
    reader.close()
    return {"title": _tidy(reader.title), "content": _tidy(reader.text), "links": list(reader.links)}


def read_text(text: str) -> dict[str, object]:
    """Plain text (text/plain, JSON, Markdown...) as web_fetch's answer: no title, no links."""
    return {"title": "", "content": text.strip(), "links": []}


def charset_of(content_type: str, head: bytes) -> str:
    """The page's encoding: Content-Type's charset, else a <meta charset> early in the page, else utf-8."""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip("\"'")
    found = _META_CHARSET.search(head[:4096])
    return found.group(1).decode("ascii") if found else "utf-8"


def decode(body: bytes, charset: str) -> str:
    """Bytes to text in `charset`; an unknown charset falls back to utf-8, bad bytes are replaced."""
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")
