"""A reference decoder that reads request bodies as Ollama's Go code does (encoding/json into its structs).

Written independently of `fortress.pipeline.jsonbody` so the tests can hold one against the other:
- a key sets the field whose name matches exactly, else one that matches ignoring case by Go's rule
  (each rune folded within its Unicode simple-fold orbit: `K` and U+212A are one letter, and so are
  `s` and U+017F; unlike Python's full folding, dotted and dotless I stay apart);
- keys that match no field are ignored; the last key that sets a field wins;
- `null` leaves a plain field (string, bool, number) as it was, and sets a pointer, map, slice or
  interface to nil;
- an object decoded into a map that already exists adds to it (Go reuses the map); into a struct,
  field by field, with the same rules.
Only the fields Ollama declares matter here; `STRUCTS` lists them per route with their Go kinds.
"""

from __future__ import annotations

import json
from typing import Any

PLAIN, POINTER, MAP, STRUCT = "plain", "pointer", "map", "struct"

_OPTIONS = {"options": MAP}
_KEEP = {"keep_alive": POINTER}
# Ollama's request structs (api/types.go, openai/openai.go), the fields a gateway cares about.
STRUCTS: dict[str, dict[str, str]] = {
    "/api/generate": {"model": PLAIN, "prompt": PLAIN, "stream": POINTER, **_KEEP, **_OPTIONS},
    "/api/chat": {"model": PLAIN, "messages": POINTER, "stream": POINTER, **_KEEP, **_OPTIONS},
    "/api/embed": {"model": PLAIN, "input": POINTER, **_KEEP, **_OPTIONS},
    "/api/embeddings": {"model": PLAIN, "prompt": PLAIN, **_KEEP, **_OPTIONS},
    "/api/show": {"model": PLAIN, "name": PLAIN, "verbose": PLAIN, **_OPTIONS},
    "/api/pull": {"model": PLAIN, "name": PLAIN, "insecure": PLAIN, "stream": POINTER},
    "/api/push": {"model": PLAIN, "name": PLAIN, "insecure": PLAIN, "stream": POINTER},
    "/api/create": {
        "model": PLAIN,
        "name": PLAIN,
        "from": PLAIN,
        "remote_host": PLAIN,
        "files": MAP,
        "adapters": MAP,
        "draft_files": MAP,
        "stream": POINTER,
        # removed from Ollama in 0.5, still read by older servers
        "path": PLAIN,
        "modelfile": PLAIN,
    },
    "/api/copy": {"source": PLAIN, "destination": PLAIN},
    "/api/delete": {"model": PLAIN, "name": PLAIN},
    "/v1/chat/completions": {
        "model": PLAIN,
        "messages": POINTER,
        "stream": PLAIN,
        "stream_options": STRUCT,
        "max_tokens": POINTER,
    },
}
_STRUCT_FIELDS = {"stream_options": {"include_usage": PLAIN}}


class Pairs(list):
    """A JSON object as decoded: its (key, value) pairs in order, duplicates kept."""


def pairs(raw: bytes) -> Any:
    """The JSON value with every object as Pairs."""
    return json.loads(raw, object_pairs_hook=Pairs)


def plain(value: Any) -> Any:
    """Pairs turned into dicts, Python's way (the last duplicate wins); for values inside a field."""
    if isinstance(value, Pairs):
        return {k: plain(v) for k, v in value}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def _fold_rune(ch: str) -> str:
    folded = ch.casefold()  # Unicode case folding: C entries are one rune, F entries several
    if len(folded) == 1:
        return folded
    lower = ch.lower()  # an F entry: its S (simple) mapping, when there is one, is the lower case
    return lower if len(lower) == 1 else ch


def go_fold(name: str) -> str:
    """Equal for two names exactly when Go's encoding/json takes them for the same field."""
    return "".join(_fold_rune(ch) for ch in name)


def _field(key: str, fields: dict[str, str]) -> str | None:
    if key in fields:
        return key
    folded = go_fold(key)
    return next((f for f in fields if go_fold(f) == folded), None)


def decode_struct(obj: Pairs, fields: dict[str, str], out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Go's Unmarshal of one object into a struct with `fields`; `out` holds what is already set."""
    out = {} if out is None else out
    for key, value in obj:
        name = _field(key, fields)
        if name is None:
            continue
        kind = fields[name]
        if value is None:
            if kind != PLAIN:
                out[name] = None
            continue
        if kind == MAP and isinstance(value, Pairs):
            merged = out.get(name) or {}
            merged.update((k, plain(v)) for k, v in value)
            out[name] = merged
        elif kind == STRUCT and isinstance(value, Pairs):
            out[name] = decode_struct(value, _STRUCT_FIELDS[name], out.get(name) or {})
        else:
            out[name] = plain(value)
    return out


def go_view(path: str, raw: bytes) -> dict[str, Any]:
    """What Ollama's handler for `path` reads from `raw`: the declared fields, Go's way."""
    value = pairs(raw)
    assert isinstance(value, Pairs), raw
    return decode_struct(value, STRUCTS[path])


def python_view(path: str, raw: bytes) -> dict[str, Any]:
    """The same fields as Python's json reads them (exact keys, the last duplicate wins)."""
    body = json.loads(raw)
    return {name: body.get(name) for name in STRUCTS[path]}


def zero(value: Any) -> Any:
    """Go's zero values and nil read as None, so `""`, `false`, `{}` and a missing field compare equal."""
    if value is None or value is False or (isinstance(value, str | dict | list) and not value):
        return None
    return value
