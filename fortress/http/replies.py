"""Responses Fortress answers itself: status lines, LocalReply, and the error shape of each client API.

A leaf module (it imports nothing from Fortress), so the pipeline and the proxy both use it without
importing each other. Everything is built from tables and joined once; nothing grows bytes in a loop.
Error shapes: Ollama `{"error": msg}`, OpenAI `{"error": {message, type, param, code}}`, Anthropic
`{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import formatdate
from enum import IntEnum
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fortress.state.snapshot import KeyRecord

Headers = tuple[tuple[bytes, bytes], ...]


class _StatusLines(dict[int, bytes]):
    """`HTTP/1.1 <status> <phrase>\r\n` by status: a subscript, not a call, on the hot path; a status
    without a registered phrase (a backend's 599) reads as Unknown."""

    def __missing__(self, status: int) -> bytes:
        return f"HTTP/1.1 {status} Unknown\r\n".encode()


STATUS_LINE = _StatusLines({s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus})

# OpenAI error "type" per status, as its clients expect them.
_OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}
# Anthropic error "type" per status (its Messages API documents these).
_ANTHROPIC_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


_date_second = 0
_date_line = b""


def date_line() -> bytes:
    """`Date: <IMF-fixdate>\r\n` for the current second: formatted once a second, not per response."""
    global _date_second, _date_line
    now = int(time.time())
    if now != _date_second:
        _date_second = now
        _date_line = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    return _date_line


class Shape(IntEnum):
    """The client API a route speaks, so the error shape its answers take. False and True, which older
    callers pass, mean OLLAMA and OPENAI."""

    OLLAMA = 0
    OPENAI = 1
    ANTHROPIC = 2


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response Fortress answers itself (rejections, probes). `headers` are extra header lines."""

    status: int
    body: bytes
    content_type: bytes = b"application/json; charset=utf-8"
    headers: Headers = ()
    close: bool = False  # close the connection after answering (smuggling shapes, unread bodies)


@dataclass(frozen=True, slots=True)
class KeyRefusal(LocalReply):
    """A refusal once the key is known (key policy, limits): usage and analytics charge it to that key.
    (Here, not in the pipeline: a class compiled by mypyc, see fortress.native, cannot extend this one.)"""

    key: KeyRecord | None = None


def ollama_error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def openai_error_body(status: int, message: str) -> bytes:
    kind = _OPENAI_TYPE.get(status, "api_error")
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}}).encode()


def anthropic_error_body(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPE.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


def error_body(status: int, message: str, openai: int) -> bytes:
    """In the route's Shape (`openai`): Ollama {"error": msg}, OpenAI {"error": {message, type, code}},
    Anthropic {"type": "error", "error": {type, message}}."""
    if openai == Shape.ANTHROPIC:
        return anthropic_error_body(status, message)
    return openai_error_body(status, message) if openai else ollama_error_body(message)


def error_reply(
    status: int,
    message: str,
    openai: int = Shape.OLLAMA,
    headers: Headers = (),
    close: bool = False,
) -> LocalReply:
    if status == 401:
        headers = ((b"WWW-Authenticate", b'Bearer realm="fortress"'), *headers)
    return LocalReply(status, error_body(status, message, openai), headers=headers, close=close)


def render(
    reply: LocalReply,
    request_id: bytes,
    keep_alive: bool,
    extra: Headers = (),
    head_only: bool = False,
    cors: bytes = b"",
) -> bytes:
    """The full response bytes for a local reply; `cors` is pre-rendered header lines (pipeline/cors.py)."""
    close = reply.close or not keep_alive
    if reply.status == 204:  # no content: no Content-Type, no Content-Length (RFC 9110 §8.6)
        parts = [STATUS_LINE[204], b"X-Request-ID: ", request_id]
    else:
        parts = [
            STATUS_LINE[reply.status],
            b"Content-Type: ",
            reply.content_type,
            b"\r\nContent-Length: ",
            str(len(reply.body)).encode(),
            b"\r\nX-Request-ID: ",
            request_id,
        ]
    parts += (b"\r\nConnection: close\r\n" if close else b"\r\n", date_line(), cors)
    for name, value in (*reply.headers, *extra):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(reply.body)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of a body Fortress frames itself."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def stream_error_line(message: str, openai: int) -> bytes:
    """The last line of a stream cut mid-way, in the route's Shape: an NDJSON error object, or an SSE
    error event (Anthropic's names its type, as its clients expect)."""
    if openai == Shape.ANTHROPIC:
        return b"event: error\ndata: " + anthropic_error_body(502, message) + b"\n\n"
    if openai:
        return b"data: " + openai_error_body(502, message) + b"\n\n"
    return ollama_error_body(message) + b"\n"
