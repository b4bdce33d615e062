"""HTTP/1.1 bytes: replies as values, precomputed status lines, response heads and chunk framing."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

JSON = b"application/json; charset=utf-8"
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream"
TEXT = b"text/plain; charset=utf-8"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error"}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


@dataclass(slots=True)
class Full:
    """A complete response; `delay_s` is extra time before its first byte (non-stream generation)."""

    status: int
    body: bytes = b""
    content_type: bytes | None = JSON
    delay_s: float = 0.0


@dataclass(slots=True)
class Stream:
    """A chunked 200 response: each item is one NDJSON line or SSE event, sent `interval_s` apart."""

    content_type: bytes
    chunks: Iterator[bytes]
    interval_s: float = 0.0


Reply = Full | Stream


def dumps(value: object) -> bytes:
    """Compact JSON with raw UTF-8, as Go's encoder writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def error(status: int, message: str) -> Full:
    """Ollama's native error body."""
    return Full(status, dumps({"error": message}))


def openai_error(status: int, message: str, code: str | None = None) -> Full:
    """The OpenAI-compatible routes' error body."""
    kind = _OPENAI_TYPES.get(status, "api_error")
    return Full(status, dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}))


def anthropic_error(status: int, message: str) -> Full:
    """The Anthropic Messages route's error body, as Ollama writes it (with a request id)."""
    kind = _ANTHROPIC_TYPES.get(status, "api_error")
    error = {"type": kind, "message": message}
    return Full(
        status, dumps({"type": "error", "error": error, "request_id": f"req_{secrets.token_hex(12)}"})
    )


def frame(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _framing(status: int, length: int | None) -> bytes:
    """Chunked when the length is unknown; a 204 carries no Content-Length (RFC 9110)."""
    if length is None:
        return b"Transfer-Encoding: chunked\r\n"
    return b"" if status == 204 else b"Content-Length: %d\r\n" % length


class Responder:
    """Builds response heads; the Date value is recomputed at most once a second."""

    def __init__(self, name: str) -> None:
        self._extra = f"X-Sim-Name: {name}\r\n".encode() if name else b""
        self._second = 0
        self._date = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = formatdate(now, usegmt=True).encode()
        return self._date

    def head(self, status: int, content_type: bytes | None, length: int | None, keep_alive: bool) -> bytes:
        """Status line and headers; `length=None` means Transfer-Encoding: chunked."""
        return b"".join(
            (
                STATUS_LINES[status],
                b"Content-Type: %s\r\n" % content_type if content_type else b"",
                b"Date: %s\r\n" % self.date(),
                _framing(status, length),
                self._extra,
                b"" if keep_alive else b"Connection: close\r\n",
                b"\r\n",
            )
        )
