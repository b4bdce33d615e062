"""Read a JSON request body the way Ollama (Go's encoding/json) will, or refuse it (DESIGN §6.2).

Go and Python read some bodies differently, and a body that passes Fortress's checks must run the same
on the backend. Go matches object keys to struct fields ignoring case (`Model`, `MODEL`, even `stream`
spelt with a long s, U+017F, all set one field), lets the last duplicate win, ignores a `null` for a
field that is not a pointer (the earlier value stays) and decodes a repeated object into the same map or
struct (`options` given twice is merged). Python keeps keys as written and the last duplicate replaces
the whole value. So `parse` refuses with 400:
- the same key twice at the top level (a Go struct, where merging and `null` make repeats ambiguous);
- at the top level and in `options` and `reasoning`, two keys equal ignoring case, or a key that differs
  only in case from a field Fortress reads.
Whatever passes means the same to both decoders for every field Fortress reads. Elsewhere differences do
not matter: unread keys in another case (`Prompt`) are left alone, a key repeated inside `options` (a Go
map) or `reasoning` (a struct of pointers) ends with the last value in Go too, and deeper, where
Fortress reads nothing, is Ollama's business. (`routing.auto` also looks inside `messages` for images;
a recased key there could only make "auto" pick a model without vision, so it is not checked.)

Cost: a body with no nested object (one `{`, the usual small request) is parsed whole by the C scanner
with the pairs hook, at the cost of `json.loads`; a small nested body (a chat) by the C scanner twice,
once for the top level's pairs, once for the body; a bigger one's top level is walked by `_top_pairs`, a
lean copy of the standard library's object walk (`json.decoder.JSONObject`, kept as the fallback for what
it declines) making the same C calls for keys and values, so the keys come as a list in one pass without a
per-object hook. Then one pass over the keys of the objects Fortress reads. When Fortress
starts reading another field, add it to `READ` (or `NESTED` for a field inside an object), or a
differently cased copy of it could slip past the new check; inside a Go struct whose field is not a
pointer, repeats would need checking too.
"""

from __future__ import annotations

import json
import re
from json.decoder import WHITESPACE, JSONObject, scanstring  # type: ignore[attr-defined]
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from json.scanner import make_scanner
from typing import Any

from fortress.pipeline.validate import Reject

# Top-level fields some stage reads (chain.body, validate, clamp_options; routing.auto for model "auto").
READ = frozenset(
    (
        "model",
        "name",
        "source",
        "destination",
        "from",
        "insecure",
        "files",
        "adapters",
        "draft_files",
        "path",
        "modelfile",
        "remote_host",
        "options",
        "keep_alive",
        "stream",
        "max_tokens",
        "max_completion_tokens",
        "api_key",
        "messages",
        "images",
        "tools",
        "think",
        "reasoning",
        "reasoning_effort",
        "suffix",
    )
)
# Objects whose own fields are read: field -> the fields read inside it.
NESTED: dict[str, frozenset[str]] = {
    "options": frozenset(("num_ctx", "num_predict")),
    "reasoning": frozenset(("effort",)),
}
# Field names of Ollama's, OpenAI's and Anthropic's request bodies (and of `options`), every one lower-case
# ASCII, so its own fold: an object whose keys are all among them needs no check_keys.
# Which names are here changes only the cost, never the answer.
_PLAIN = READ.union(
    *NESTED.values(),
    (
        "prompt",
        "format",
        "system",
        "template",
        "context",
        "raw",
        "truncate",
        "shift",
        "dimensions",
        "input",
        "logprobs",
        "top_logprobs",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "seed",
        "stop",
        "n",
        "user",
        "metadata",
        "response_format",
        "tool_choice",
        "stream_options",
        "presence_penalty",
        "frequency_penalty",
        "repeat_penalty",
        "repeat_last_n",
        "num_keep",
        "num_batch",
        "num_gpu",
        "stop_sequences",
        "encoding_format",
        "parallel_tool_calls",
    ),
)
# the C scanner (typeshed types make_scanner's argument as its own class): plain dicts below the top
# level, and pairs for a body with no nested object
_SCAN = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_SCAN_PAIRS = make_scanner(json.JSONDecoder(object_pairs_hook=list))  # type: ignore[arg-type]
_WHITESPACE = " \t\n\r"
_SPACE = WHITESPACE.match
# An object's walk (_top_pairs): before the first key its opening quote; a colon; after a value a comma
# and the next key's quote; else the closing brace.
_KEY = re.compile(r'[ \t\n\r]*"')
_COLON = re.compile(r"[ \t\n\r]*:[ \t\n\r]*")
_NEXT = re.compile(r'[ \t\n\r]*,[ \t\n\r]*"')
_CLOSE = re.compile(r"[ \t\n\r]*\}")
_NESTED_FIELDS = frozenset(NESTED)
_PLAIN_FLAT = _PLAIN - _NESTED_FIELDS  # a body of these keys only needs no check at all
# A body with nested objects up to this size is read by the C scanner twice (its top level's pairs, then
# the body), at ~60% of the cost of walking its top level (_walk); a bigger one is walked, read once.
_SCAN_TWICE = 16384


def fold(key: str) -> str:
    """A form equal for any two keys Go's decoder treats as the same field name (lower case).

    Go folds each rune to the smallest rune of its Unicode simple-fold orbit, so U+212A (Kelvin sign) is
    `k` and U+017F (long s) is `s`. Lower, upper, lower again puts every orbit on one form; U+0130 and
    U+0131 (dotted and dotless I) also become `i`, which Go does not do: that only refuses a little more.
    """
    if key.isascii():
        return key.lower()
    return key.replace("\u0130", "i").lower().upper().lower()


def _show(key: str) -> str:
    return repr(key[:40])


def check_keys(obj: dict[str, Any], read: frozenset[str], where: str = "the request body") -> Reject | None:
    """One pass over an object's keys: no two equal ignoring case, none a recased field from `read`."""
    joined = "".join(obj)
    if joined.isascii() and joined.lower() == joined:
        return None  # every key is its own fold: distinct keys, no recased field (the usual body)
    seen: set[str] = set()
    for key in obj:
        folded = fold(key)
        if folded in seen:
            return Reject(400, f"{where} has keys that differ only in case ({_show(key)})")
        if folded != key and folded in read:
            return Reject(400, f"unexpected key {_show(key)} in {where}: write it as '{folded}'")
        seen.add(folded)
    return None


def parse(raw: bytes) -> dict[str, Any] | Reject:
    """The body as a dict both decoders agree on, or the reason it is refused (always 400)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return Reject(400, "invalid JSON in request body: not UTF-8")
    body = None
    if text.startswith("{"):
        nested = raw.count(b"{") != 1
        if not nested or len(raw) <= _SCAN_TWICE:
            # the top level's pairs in one C call (with no nested object, the usual small request, they
            # make the body; else nested objects came as pairs, and a second call reads the body); a body
            # that is not clean JSON is walked below, which words the refusal
            try:
                pairs, end = _SCAN_PAIRS(text, 0)
                body = _SCAN(text, 0)[0] if nested else dict(pairs)
            except (ValueError, StopIteration, RecursionError):
                body = None
    if body is None:
        found = _walk(text)
        if isinstance(found, Reject):
            return found
        pairs, end = found
        body = dict(pairs)
    if end != len(text) and text[end:].strip(_WHITESPACE):
        return Reject(400, f"invalid JSON in request body: extra data at character {end}")
    if len(body) != len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if any(k == other for other, _ in pairs[:i]))
        return Reject(400, f"the request body has the key {_show(twice)} twice")
    if _PLAIN_FLAT.issuperset(body):
        return body  # well-known names only, none of an object Fortress reads inside: nothing to check
    # well-known names only (the usual body) need no look at each key
    reject = None if _PLAIN.issuperset(body) else check_keys(body, READ)
    if reject is not None or _NESTED_FIELDS.isdisjoint(body):
        return reject or body
    for field, inner in NESTED.items():
        value = body.get(field)
        if isinstance(value, dict) and not _PLAIN.issuperset(value):
            reject = check_keys(value, inner, f"'{field}'")
            if reject is not None:
                return reject
    return body


def _walk(text: str) -> tuple[list[tuple[str, Any]], int] | Reject:
    """The top level's pairs and where the object ends, for any body (leading whitespace, nested
    objects), or the refusal: not an object, not clean JSON."""
    start = 0
    if text[:1] != "{":  # leading whitespace, or no object at all
        start = _SPACE(text).end()
        if start == len(text):
            return Reject(400, "missing request body")
        if text[start] != "{":
            return _not_an_object(text)
    found = _top_pairs(text, start)
    if found is None:  # not clean JSON: the standard library's walk words the refusal
        try:
            found = JSONObject((text, start + 1), True, _SCAN, None, list, {})
        except ValueError as exc:
            return Reject(400, f"invalid JSON in request body: {exc}")
        except RecursionError:
            return Reject(400, "invalid JSON in request body: nested too deeply")
    return found


def _top_pairs(text: str, start: int) -> tuple[list[tuple[str, Any]], int] | None:
    """The pairs of the object at `start` and where it ends, or None where it is not clean JSON.

    json.decoder.JSONObject's walk with its generality left out (hooks, memo, error wording): the same
    C calls for keys (scanstring) and values (the scanner), the same JSON whitespace, so the same pairs
    whenever it answers, at about half the bytecodes of a chat body's three fields."""
    pairs: list[tuple[str, Any]] = []
    append = pairs.append
    at = start + 1
    sep = _KEY.match(text, at)
    try:
        while sep is not None:
            key, at = scanstring(text, sep.end(), True)
            colon = _COLON.match(text, at)
            if colon is None:
                return None
            value, at = _SCAN(text, colon.end())
            append((key, value))
            sep = _NEXT.match(text, at)
    except (ValueError, StopIteration, RecursionError):
        return None
    close = _CLOSE.match(text, at)  # no further key: the object ends here, or it is not clean JSON
    return None if close is None else (pairs, close.end())


def _not_an_object(text: str) -> Reject:
    """The refusal for a body that does not start with `{`: malformed, or some other JSON value."""
    try:
        json.loads(text)
    except ValueError as exc:
        return Reject(400, f"invalid JSON in request body: {exc}")
    except RecursionError:
        return Reject(400, "invalid JSON in request body: nested too deeply")
    return Reject(400, "request body must be a JSON object")


# json.dumps's own output (ASCII escapes, ", " and ": ") from the standard library's C encoder, built once:
# json.dumps builds it again on every call, ~110 bytecodes per rewritten body. No circular-reference
# markers: a parsed body holds no cycles.
_iterencode = c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ": ", ", ", False, False, True
)


def encode(body: dict[str, Any]) -> bytes:
    """A body the stages rewrote (the model "auto" chose, clamped options, the api_key taken out), written
    as json.dumps writes it."""
    return "".join(_iterencode(body, 0)).encode()
