"""Deterministic structured output: example values for a JSON Schema, tool calls, token-sized fragments.

A simulated model that is given tools calls them, and one asked for JSON answers JSON, so gateways
that translate tool calls and `response_format` have something real to carry. Strings hold a quote,
a backslash and non-ASCII text, and fragments cut through escapes, so a relay that reassembles or
re-encodes them wrongly is caught.
"""

from __future__ import annotations

import json
import random
import string

SAMPLE_TEXT = 'Café "naïve" \\ ✓'
FRAGMENT_CHARS = 4  # characters of JSON text per streamed fragment (one token each)


def example(schema: object) -> object:
    """A value that satisfies the common subset of JSON Schema (type, properties, required, enum, items)."""
    if not isinstance(schema, dict):
        return SAMPLE_TEXT
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example(schema[key][0])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and isinstance(schema.get("properties"), dict)):
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        required = schema.get("required") if isinstance(schema.get("required"), list) else list(properties)
        return {name: example(sub) for name, sub in properties.items() if name in required}
    return {
        "array": lambda: [example(schema.get("items"))],
        "integer": lambda: 42,
        "number": lambda: 2.5,
        "boolean": lambda: True,
        "null": lambda: None,
    }.get(kind, lambda: SAMPLE_TEXT)()


def call_id(openai: bool) -> str:
    """A tool call's id: OpenAI's `call_` + 24 alphanumerics, Ollama's `call_` + 8 lower-case ones."""
    if openai:
        return "call_" + "".join(random.choices(string.ascii_letters + string.digits, k=24))
    return "call_" + "".join(random.choices(string.ascii_lowercase + string.digits, k=8))


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


def fragments(text: str, limit: int | None = None) -> tuple[list[str], bool]:
    """`text` in FRAGMENT_CHARS pieces; at most `limit` of them. (pieces, cut short?)"""
    pieces = [text[i : i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)] or [""]
    if limit is not None and 0 < limit < len(pieces):
        return pieces[:limit], True
    return pieces, False


def chosen_tools(tools: list, choice: object, parallel: object) -> list[dict]:
    """The function definitions the model calls: the named one, or each tool (only the first when
    parallel calls are off). `tool_choice: "none"` calls nothing."""
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if choice == "none":
        return []
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name") or choice.get("name")
        return [f for f in functions if f.get("name") == wanted][:1]
    return functions[:1] if parallel is False else functions


def arguments(function: dict) -> dict:
    """A call's arguments, from the function's `parameters` schema (always an object)."""
    schema = function.get("parameters")
    value = example(schema) if schema else {}
    return value if isinstance(value, dict) else {"value": value}
