"""Bytes on the wire: precomputed status lines, local replies in Ollama's or OpenAI's error shape.

Everything here is built from tables and joined once; nothing grows bytes in a loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

STATUS_LINE: dict[int, bytes] = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}

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


def status_line(status: int) -> bytes:
    line = STATUS_LINE.get(status)
    return line if line is not None else f"HTTP/1.1 {status} Unknown\r\n".encode()


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response Fortress answers itself (rejections, probes). `headers` are extra header lines."""

    status: int
    body: bytes
    content_type: bytes = b"application/json; charset=utf-8"
    headers: tuple[tuple[bytes, bytes], ...] = ()
    close: bool = False  # close the connection after answering (smuggling shapes, unread bodies)


def error_body(status: int, message: str, openai: bool) -> bytes:
    """Ollama routes: {"error": msg}; /v1 routes: OpenAI's {"error": {message, type, code}}."""
    if openai:
        kind = _OPENAI_TYPE.get(status, "api_error")
        obj: dict = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        obj = {"error": message}
    return json.dumps(obj).encode()


def error_reply(
    status: int,
    message: str,
    openai: bool = False,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    close: bool = False,
) -> LocalReply:
    if status == 401:
        headers = ((b"WWW-Authenticate", b'Bearer realm="fortress"'), *headers)
    return LocalReply(status, error_body(status, message, openai), headers=headers, close=close)


def render(
    reply: LocalReply,
    request_id: bytes,
    keep_alive: bool,
    extra: tuple[tuple[bytes, bytes], ...] = (),
    head_only: bool = False,
) -> bytes:
    """The full response bytes for a local reply."""
    close = reply.close or not keep_alive
    parts = [
        status_line(reply.status),
        b"Content-Type: ",
        reply.content_type,
        b"\r\nContent-Length: ",
        str(len(reply.body)).encode(),
        b"\r\nX-Request-ID: ",
        request_id,
        b"\r\nConnection: close\r\n" if close else b"\r\n",
    ]
    for name, value in (*reply.headers, *extra):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    if not head_only:
        parts.append(reply.body)
    return b"".join(parts)


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (used only for Fortress's own final error line on a cut stream)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_error_line(message: str, openai: bool) -> bytes:
    """The last line of a stream cut mid-way: an NDJSON error object or an SSE error event."""
    if openai:
        return b"data: " + error_body(502, message, True) + b"\n\n"
    return json.dumps({"error": message}).encode() + b"\n"
