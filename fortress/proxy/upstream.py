"""The backend side of a relay: one keep-alive connection to one backend, one response at a time.

The response head is parsed (httptools) and rewritten for the client; the body is written to the client
exactly as it arrived, chunk framing included, and fed to the parser only to know where the response
ends and to keep its last pieces for accounting. Reading pauses when the client cannot keep up.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import httptools

if TYPE_CHECKING:
    from fortress.proxy.exchange import Exchange

MAX_RESPONSE_HEAD = 64 * 1024


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "activity",
        "backend",
        "body_bytes",
        "buf",
        "chunked",
        "closed",
        "done",
        "ex",
        "head_sent",
        "headers",
        "in_chunk",
        "keep_alive",
        "parser",
        "pre",
        "seen",
        "sent_at",
        "stalled_since",
        "status",
        "tail",
        "transport",
    )

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.closed = False
        self.parser: httptools.HttpResponseParser | None = None
        self.activity = 0  # bumped per read; the sweeper compares it to find stalled streams
        self.seen = 0
        self.sent_at = 0.0
        self.stalled_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.buf = b""
        self.head_sent = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.status = 0
        self.done = False
        self.chunked = False
        self.in_chunk = False
        self.keep_alive = True
        self.body_bytes = 0
        self.tail: list[bytes] = []
        self.pre: list[bytes] = []  # decoded body seen before the head went out (HTTP/1.0 clients)

    # -- pool predicates -------------------------------------------------------------------------
    @property
    def reusable(self) -> bool:
        return not self.closed and self.ex is None and self.transport is not None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- driving ---------------------------------------------------------------------------------
    def send(self, ex: Exchange, data: bytes) -> None:
        """Start a request/response on this connection."""
        self.ex = ex
        self.sent_at = time.monotonic()
        self._reset()
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)
        assert self.transport is not None
        self.transport.write(data)

    # -- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        self.activity += 1
        if ex is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.close()
            return
        parser = self.parser
        assert parser is not None
        relaying = self.head_sent
        if relaying:
            ex.to_client(data)  # the bytes go out first; parsing only tracks framing and the tail
        else:
            self.buf += data
        try:
            parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()
            ex.upstream_broken("backend sent a malformed response")
            return
        if not relaying:
            if not self.status:
                if len(self.buf) > MAX_RESPONSE_HEAD:
                    self.close()
                    ex.upstream_broken("backend response head too large")
                return
            end = self.buf.find(b"\r\n\r\n") + 4
            rest = self.buf[end:]
            self.buf = b""
            if not ex.response_head(self, rest if ex.raw else b""):
                return  # the exchange chose to retry elsewhere
            self.head_sent = True
            if not ex.raw:
                for piece in self.pre:
                    ex.to_client(piece)
                self.pre = []
        if self.done:
            self._finish()

    def _finish(self) -> None:
        ex = self.ex
        self.ex = None
        reuse = self.keep_alive and not self.closed
        if not reuse:
            self.close()
        if self.parser is not None and (ex is not None and ex.method == b"HEAD"):
            self.parser = None  # a HEAD response leaves the parser expecting a body
        if ex is not None:
            ex.response_done(self, reuse)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is not None and not self.done:
            self.ex = None
            ex.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.pause_reading()

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.client.resume_reading()

    # -- httptools callbacks: record only ---------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request: the backend broke the protocol
            raise ValueError("unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        self.status = parser.get_status_code()
        self.keep_alive = parser.should_keep_alive()
        ex = self.ex
        if ex is not None and (ex.method == b"HEAD" or self.status in (204, 304)):
            self.done = True

    def on_chunk_header(self) -> None:
        self.chunked = True
        self.in_chunk = True

    def on_chunk_complete(self) -> None:
        self.in_chunk = False

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        tail = self.tail
        tail.append(body)
        if len(tail) > 3:
            del tail[0]
        ex = self.ex
        if ex is not None and not ex.raw:
            if self.head_sent:
                ex.to_client(body)
            else:
                self.pre.append(body)

    def on_message_complete(self) -> None:
        self.done = True
