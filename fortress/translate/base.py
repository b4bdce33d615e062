"""What every translation codec shares: the injected clock, header lookup, Go-style time stamps.

The codecs implement the Codec protocol of `fortress/backends/codec.py` (head, feed, end, cut,
prompt_tokens, completion_tokens); see docs/architecture.md for where the exchange calls them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

Headers = list[tuple[bytes, bytes]]
Clock = Callable[[], int]  # nanoseconds since the epoch, e.g. time.time_ns

JSON = b"application/json; charset=utf-8"
NDJSON = b"application/x-ndjson"
SSE = b"text/event-stream"

# The standard library's C encoder, built once: JSONEncoder.encode builds it again on every call, about
# 150 bytecodes of Python per answer. No circular-reference markers: the codecs encode what they built.
_iterencode = c_make_encoder(
    None, json.JSONEncoder().default, encode_basestring, None, ":", ",", False, False, True
)


def dumps(value: object) -> bytes:
    """Compact JSON with raw UTF-8, as Go's encoder writes it (no ASCII escaping of text)."""
    return "".join(_iterencode(value, 0)).encode()


_decode = json.JSONDecoder().decode


def loads(data: bytes) -> Any:
    """A provider's JSON (UTF-8, RFC 8259), without json.loads's sniffing for UTF-16 and UTF-32: about
    90 bytecodes less per answer or event. Bytes that are not UTF-8 raise ValueError, as there."""
    return _decode(data.decode("utf-8-sig"))


def header(headers: Headers, name: bytes) -> bytes:
    """The value of header `name` (lower-case), matched case-insensitively; b"" when absent."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return b""


def is_event_stream(headers: Headers) -> bool:
    return header(headers, b"content-type").split(b";", 1)[0].strip().lower() == SSE


def _date(second: int) -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()


def _stamp(date: bytes, fraction: int) -> bytes:
    """Go's RFC3339Nano: the fraction loses its trailing zeros, and vanishes when zero."""
    if not fraction:
        return date + b"Z"
    return b"%s.%sZ" % (date, (b"%09d" % fraction).rstrip(b"0"))


def rfc3339nano(ns: int) -> str:
    """Nanoseconds since the epoch as Ollama writes times (UTC)."""
    second, fraction = divmod(ns, 1_000_000_000)
    return _stamp(_date(second), fraction).decode()


class Stamps:
    """Ollama's `created_at` for each line, from the clock; the date part is formatted once a second."""

    __slots__ = ("_clock", "_date", "_second")

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._second = -1
        self._date = b""

    def now(self) -> tuple[int, bytes]:
        """(clock reading in ns, its stamp as bytes without quotes)."""
        ns = self._clock()
        second, fraction = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._date = _date(second)
        return ns, _stamp(self._date, fraction)


class Counted:
    """The token counts a codec reads from the provider's `usage` (the Codec protocol's two attributes)."""

    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self) -> None:
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def _count(self, usage: object) -> None:
        """Take OpenAI's `usage` object (the Responses API names its counts input_tokens and output_tokens);
        the last one seen wins (some servers zero it on every chunk)."""
        if isinstance(usage, dict):
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(prompt, int):
                self.prompt_tokens = prompt
            if isinstance(completion, int):
                self.completion_tokens = completion
