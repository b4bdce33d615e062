"""Decode request bodies the way gin's ShouldBindJSON does, with Go's error wording.

Like json.Decoder.Decode, only the first JSON value counts (trailing bytes are ignored), and a
field of the wrong type fails with `json: cannot unmarshal <kind> into Go struct field ...`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

_decoder = json.JSONDecoder()
_WHITESPACE = b" \t\r\n"

# JSON kind of a decoded Python value, as Go's UnmarshalTypeError names it.
_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "bool"),
    (str, "string"),
    (int, "number"),
    (float, "number"),
    (list, "array"),
    (dict, "object"),
)
# Go type name -> JSON kinds it accepts (null is always accepted).
_ACCEPTS = {
    "string": {"string"},
    "bool": {"bool"},
    "*bool": {"bool"},
    "int": {"number"},
    "*int": {"number"},
    "float64": {"number"},
    "*float64": {"number"},
    "[]int": {"array"},
    "[]string": {"array"},
    "map[string]interface {}": {"object"},
    "map[string]string": {"object"},
    "json.RawMessage": {"string", "number", "bool", "array", "object"},
    "*api.Duration": {"string", "number"},
}


class DecodeError(ValueError):
    """A body gin would refuse with 400; str() is the message Ollama puts in `error`."""


def kind_of(value: object) -> str:
    """Go's name for the JSON kind of a decoded value."""
    for python_type, kind in _KINDS:
        if isinstance(value, python_type):
            return kind
    return "null"


def _syntax_message(text: str, error: json.JSONDecodeError) -> str:
    """Translate Python's decoder complaint into Go's encoding/json wording."""
    if error.pos >= len(text.rstrip()):
        return "unexpected EOF"
    char = text[error.pos]
    quoted = "'\\''" if char == "'" else "'" + json.dumps(char)[1:-1].replace('\\"', '"') + "'"
    if error.msg.startswith("Expecting property name"):
        where = "looking for beginning of object key string"
    elif error.msg.startswith("Expecting ':'"):
        where = "after object key"
    elif error.msg.startswith("Expecting ','"):
        where = "after array element" if _innermost(text, error.pos) == "[" else "after object key:value pair"
    elif error.msg.startswith("Invalid control character"):
        where = "in string literal"
    elif error.msg.startswith("Invalid \\escape"):
        where = "in string escape code"
    else:
        where = "looking for beginning of value"
    return f"invalid character {quoted} {where}"


def _innermost(text: str, pos: int) -> str:
    """The bracket that encloses `pos` ('{' or '['), skipping string contents."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            escaped = not escaped and char == "\\"
            in_string = escaped or char != '"'
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def decode(body: bytes) -> object:
    """The first JSON value of `body`; DecodeError('EOF') when there is none."""
    if not body.strip(_WHITESPACE):
        raise DecodeError("EOF")
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        raise DecodeError("invalid character in string literal") from error
    start = len(text) - len(text.lstrip())
    try:
        value, _ = _decoder.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise DecodeError(_syntax_message(text, error)) from error
    return value


def decode_struct(body: bytes, struct: str, fields: Mapping[str, str]) -> dict:
    """Decode an object into Go struct `struct` whose typed `fields` map json name -> Go type."""
    value = decode(body)
    if not isinstance(value, dict):
        raise DecodeError(f"json: cannot unmarshal {kind_of(value)} into Go value of type {struct}")
    for name, go_type in fields.items():
        item = value.get(name)
        if item is None:
            continue
        kind = kind_of(item)
        accepted = _ACCEPTS.get(go_type, {"array"} if go_type.startswith("[]") else {"object"})
        if kind not in accepted:
            short = struct.rpartition(".")[2]
            raise DecodeError(
                f"json: cannot unmarshal {kind} into Go struct field {short}.{name} of type {go_type}"
            )
    return value
