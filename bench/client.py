"""Our own HTTP/1.1 load client (asyncio + httptools): streams, held connections and uploads.

wrk covers plain request/response load; this client exists for what wrk cannot see: when each
body piece of a stream arrives, thousands of connections held open, and a body sent with flow control.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

import httptools


@dataclass
class Response:
    """What one exchange produced; times are time.perf_counter() values."""

    sent_at: float
    status: int = 0
    size: int = 0
    lines: int = 0
    first_body_at: float = math.nan
    done_at: float = math.nan
    arrivals: list[float] = field(default_factory=list)  # filled only when tracking

    @property
    def ttfb(self) -> float:
        return self.first_body_at - self.sent_at


def request_head(
    method: str,
    path: str,
    port: int,
    key: str,
    length: int,
    extra: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    """A request head with the bench key (the direct and nginx targets simply ignore it)."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Authorization: Bearer {key}",
        f"Content-Type: {content_type}",
        f"Content-Length: {length}",
        *(f"{k}: {v}" for k, v in (extra or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Conn(asyncio.Protocol):
    """One keep-alive client connection doing one exchange at a time."""

    def __init__(self, track_arrivals: bool) -> None:
        self.track = track_arrivals
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.lost = False

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.writable.set()
        self._fail(ConnectionError(f"connection closed mid-response ({exc})"))

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # httptools callbacks
    def on_headers_complete(self) -> None:
        if self.response is not None:
            self.response.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        r = self.response
        if r is None:
            return
        now = time.perf_counter()
        if r.size == 0:
            r.first_body_at = now
        r.size += len(body)
        r.lines += body.count(b"\n")
        if self.track:
            r.arrivals.append(now)

    def on_message_complete(self) -> None:
        r, w = self.response, self.waiter
        if r is None or w is None:
            return
        r.done_at = time.perf_counter()
        self.response = self.waiter = None
        if not w.done():
            w.set_result(r)

    # the API
    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _begin(self) -> asyncio.Future[Response]:
        if self.lost or self.transport is None:
            raise ConnectionError("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.response = Response(sent_at=time.perf_counter())
        return self.waiter

    async def exchange(self, data: bytes) -> Response:
        """Send a complete request and wait for the whole response."""
        waiter = self._begin()
        assert self.transport is not None
        self.transport.write(data)
        return await waiter

    async def upload(self, head: bytes, pieces: Iterable[bytes]) -> Response:
        """Send head then the body pieces, waiting whenever the socket buffer is full."""
        waiter = self._begin()
        assert self.transport is not None
        self.transport.write(head)
        for piece in pieces:
            await self.writable.wait()
            if waiter.done() or self.lost:
                break  # the server answered (or hung up) early
            self.transport.write(piece)
        return await waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int, track_arrivals: bool = False) -> Conn:
    """Open a loopback connection to port."""
    _, conn = await asyncio.get_running_loop().create_connection(
        lambda: Conn(track_arrivals), "127.0.0.1", port
    )
    return conn
