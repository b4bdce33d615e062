"""What the playground pages post, checked and turned into proxy requests (pure; no I/O).

The browser's JSON is untrusted input to the admin: only known fields and types pass, so the
relay never forwards anything the page did not mean to send.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from admin.wordsets import SETS

ROLES = ("user", "assistant", "system")
# option name -> (type, lowest allowed, highest allowed); None: no bound
OPTIONS: dict[str, tuple[type, float | None, float | None]] = {
    "temperature": (float, 0.0, 10.0),
    "top_p": (float, 0.0, 1.0),
    "num_predict": (int, -2, None),  # Ollama: -1 = until the model stops, -2 = fill the context
    "seed": (int, None, None),
    "num_ctx": (int, 1, None),
}
MAX_MESSAGES = 500
MAX_TEXTS = 300
MAX_TEXT_CHARS = 500
SEARCH_RESULTS = 5  # web results given to the model as context
MAX_SNIPPET_CHARS = 1000  # of each result's text
MAX_QUERY_CHARS = 500  # of the question, as the search query
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_MODEL = re.compile(r"^[^\s\x00-\x1f]{1,200}$")


class BadInput(ValueError):
    """The page sent something the playground cannot use; the message says what."""


def model_name(value: object) -> str:
    if not isinstance(value, str) or not _MODEL.match(value):
        raise BadInput("choose a model")
    return value


def options(value: object) -> dict[str, float | int]:
    """The known options that are set, as numbers in range; blanks are left to the model's default."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput("options must be an object")
    out: dict[str, float | int] = {}
    for name, raw in value.items():
        if name not in OPTIONS:
            raise BadInput(f"unknown option {name!r}")
        if raw is None or raw == "":
            continue
        kind, low, high = OPTIONS[name]
        try:
            number = kind(raw) if not isinstance(raw, bool) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not math.isfinite(number) or (kind is int and float(raw) != number):
            raise BadInput(f"{name} must be {'a whole number' if kind is int else 'a number'}")
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise BadInput(f"{name} must be {bounds}")
        out[name] = number
    return out


def _message(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise BadInput("each message must be an object")
    role, content = value.get("role"), value.get("content", "")
    if role not in ROLES:
        raise BadInput(f"message role must be one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise BadInput("message content must be text")
    message: dict[str, object] = {"role": role, "content": content}
    images = value.get("images") or []
    if not isinstance(images, list) or not all(isinstance(i, str) and _BASE64.match(i) for i in images):
        raise BadInput("images must be a list of base64 strings (no data: prefix)")
    if images:
        message["images"] = images
    return message


def chat_body(data: object) -> dict[str, object]:
    """The proxy's /api/chat body (streamed) for what the chat page posted.

    The page posts {model, system, messages: [{role, content, images}], options, web_search}; the web
    search itself (`wants_search`, `search_query`, `sources`, `with_sources`) is the controller's.
    """
    if not isinstance(data, dict):
        raise BadInput("expected a JSON object")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadInput("write a message first")
    if len(messages) > MAX_MESSAGES:
        raise BadInput(f"at most {MAX_MESSAGES} messages in one conversation")
    system = data.get("system") or ""
    if not isinstance(system, str):
        raise BadInput("the system prompt must be text")
    chat = [_message(m) for m in messages]
    if system.strip():
        chat.insert(0, {"role": "system", "content": system})
    body: dict[str, object] = {"model": model_name(data.get("model")), "messages": chat, "stream": True}
    opts = options(data.get("options"))
    if opts:
        body["options"] = opts
    return body


def wants_search(data: dict[str, object]) -> bool:
    """The page's "Search the web" toggle."""
    value = data.get("web_search", False)
    if not isinstance(value, bool):
        raise BadInput("web_search must be true or false")
    return value


def search_query(body: dict[str, object]) -> str:
    """What to search the web for: the question just asked (the last user message), shortened."""
    messages = body["messages"]
    assert isinstance(messages, list)
    last = messages[-1]
    text = _flat(last.get("content"), MAX_QUERY_CHARS) if last.get("role") == "user" else ""
    if not text:
        raise BadInput("web search needs a question: write one in your last message")
    return text


def _flat(value: object, limit: int) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


def sources(answer: object) -> list[dict[str, str]]:
    """The usable results of a web_search answer (still untrusted input): http(s) URLs with a host,
    each once, at most SEARCH_RESULTS, text on one line and trimmed."""
    results = answer.get("results") if isinstance(answer, dict) else None
    out: dict[str, dict[str, str]] = {}
    for item in results if isinstance(results, list) else ():
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or url in out or len(out) >= SEARCH_RESULTS:
            continue
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            title = _flat(item.get("title"), 200) or url
            out[url] = {"url": url, "title": title, "content": _flat(item.get("content"), MAX_SNIPPET_CHARS)}
    return list(out.values())


def with_sources(body: dict[str, object], found: list[dict[str, str]]) -> None:
    """Give the model the search results, numbered with their URLs, just before the question."""
    if not found:
        note = "A web search for the user's question found nothing; say so if it matters."
    else:
        listed = "\n\n".join(
            f"[{i}] {s['title']}\nURL: {s['url']}\n{s['content']}" for i, s in enumerate(found, 1)
        )
        note = (
            "Web search results for the user's question follow. Use them where they help, cite them by "
            f"number like [1], and do not invent sources.\n\n{listed}"
        )
    messages = body["messages"]
    assert isinstance(messages, list)
    messages.insert(len(messages) - 1, {"role": "system", "content": note})


@dataclass(frozen=True)
class Texts:
    """Texts to embed, each with the index of its set in `sets`."""

    texts: list[str]
    groups: list[int]
    sets: list[str]


def embed_texts(chosen: Iterable[str], typed: str) -> Texts:
    """Built-in sets by name, then typed lines; `# name` on its own line starts a typed set.

    A text already taken (same words, any case) is skipped, so one point is one text.
    """
    texts: list[str] = []
    groups: list[int] = []
    sets: list[str] = []
    seen: set[str] = set()

    def add(text: str, group: str) -> None:
        if len(text) > MAX_TEXT_CHARS:
            raise BadInput(f"a text is longer than {MAX_TEXT_CHARS} characters: {text[:40]!r}...")
        if text.lower() in seen:
            return
        if group not in sets:
            sets.append(group)
        seen.add(text.lower())
        texts.append(text)
        groups.append(sets.index(group))

    for name in chosen:
        if name not in SETS:
            raise BadInput(f"no built-in set named {name!r}")
        for word in SETS[name]:
            add(word, name)
    group = "your texts"
    for line in typed.splitlines():
        line = line.strip()
        if line.startswith("#"):
            group = line.lstrip("#").strip()[:40] or "your texts"
        elif line:
            add(line, group)
    if not texts:
        raise BadInput("choose a built-in set or type some texts")
    if len(texts) > MAX_TEXTS:
        raise BadInput(f"at most {MAX_TEXTS} texts at once ({len(texts)} given)")
    return Texts(texts, groups, sets)
