"""The simulator's HTTP/1.1 connection: httptools callbacks record, one dispatch per request, paced writes.

Responses leave in request order (pipelining is served from a queue). Complete replies with no delay
are written straight from the parser callback; delayed replies and streams run in one task per
connection, which waits on `writable` whenever the transport asks to pause.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from typing import cast

import httptools

from fortress.sim.app import Route, Simulator
from fortress.sim.request import Request
from fortress.sim.wire import CONTINUE, LAST_CHUNK, TEXT, Full, Reply, Responder, Stream, frame

MAX_QUEUED = 32  # pipelined requests held before reading pauses
COALESCE_BYTES = 16384  # largest write an unpaced stream gathers


class SimProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, sim: Simulator, responder: Responder) -> None:
        self.sim = sim
        self.responder = responder
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self.busy = False
        self.reading_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.queue: deque[tuple[Request, Route]] = deque()
        self._url: list[bytes] = []
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._body_length = 0
        self._hasher: hashlib._Hash | None = None
        self._entry: dict | None = None
        self._request: Request | None = None
        self._route: Route | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's class is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError:
            if not self.busy:
                body = b"400 Bad Request"
                self._write(self.responder.head(400, TEXT, len(body), False) + body)
            self._close()

    # httptools callbacks: record only
    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._body = []
        self._body_length = 0
        self._hasher = None

    def on_url(self, url: bytes) -> None:
        self._url.append(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        raw = b"".join(self._url)
        target = raw.decode("latin-1")
        method = self.parser.get_method().decode()
        req = Request(
            method=method,
            target=target,
            path=httptools.parse_url(raw).path.decode("latin-1") if raw.startswith(b"/") else target,
            headers=self._headers,
            lower={name.lower(): value for name, value in self._headers},
            keep_alive=self.parser.should_keep_alive(),
        )
        self._request = req
        self._route = self.sim.prepare(req)
        self._entry = req.entry = (
            None
            if req.path.startswith("/_sim/")
            else self.sim.journal.record(method, target, self._headers, self.peer)
        )
        if self._route.hashes_body and method == "POST":
            self._hasher = hashlib.sha256()
        if not self.busy and req.lower.get("expect", "").lower() == "100-continue":
            self._write(CONTINUE)  # never inside another response that is still being written

    def on_body(self, body: bytes) -> None:
        self._body_length += len(body)
        if self._hasher is not None:
            self._hasher.update(body)
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        req, route = self._request, self._route
        assert req is not None and route is not None
        req.body = b"".join(self._body)
        if self._hasher is not None:
            req.body_sha256 = self._hasher.hexdigest()
        if self._entry is not None:
            self._entry["body_length"] = self._body_length
            if self.sim.settings.journal_bodies and self._hasher is None:
                self._entry["body"] = req.body.decode("utf-8", "replace")
        if self.busy:
            self.queue.append((req, route))
            if len(self.queue) >= MAX_QUEUED and not self.reading_paused and self.transport:
                self.reading_paused = True
                self.transport.pause_reading()
            return
        reply = self.sim.handle(req, route)
        if isinstance(reply, Full) and not reply.delay_s and not (req.knobs and req.knobs.delay_s):
            self._send_full(req, reply)
            return
        self.busy = True
        asyncio.get_running_loop().create_task(self._run(req, reply))

    # writing
    async def _run(self, req: Request, reply: Reply) -> None:
        """Send this reply, then any requests that queued behind it, in order."""
        try:
            await self._send(req, reply)
            while self.queue and not self.closed:
                req, route = self.queue.popleft()
                await self._send(req, self.sim.handle(req, route))
        finally:
            self.busy = False
            if self.reading_paused and not self.closed and self.transport:
                self.reading_paused = False
                self.transport.resume_reading()

    async def _send(self, req: Request, reply: Reply) -> None:
        delay = req.knobs.delay_s if req.knobs else 0.0
        if isinstance(reply, Full):
            delay += reply.delay_s
        if delay > 0:
            await asyncio.sleep(delay)
        if self.closed:
            return
        if isinstance(reply, Full):
            self._send_full(req, reply)
        else:
            await self._send_stream(req, reply)

    def _send_full(self, req: Request, reply: Full) -> None:
        head = self.responder.head(reply.status, reply.content_type, len(reply.body), req.keep_alive)
        self._write(head if req.method == "HEAD" else head + reply.body)
        if not req.keep_alive:
            self._close()

    async def _send_stream(self, req: Request, reply: Stream) -> None:
        """Chunked body, item i due at start + i * interval; --die-after cuts it with no last chunk.

        Frames that are due are gathered and written together (up to COALESCE_BYTES), so a paced
        stream writes each token on its own, like Ollama flushing every token, while an unpaced
        one (rate 0) costs a few large writes and the simulator is never the bottleneck.
        """
        die_after = req.knobs.die_after if req.knobs else None
        loop = asyncio.get_running_loop()
        started = loop.time()
        pending = [self.responder.head(200, reply.content_type, None, req.keep_alive)]
        size = 0
        for index, chunk in enumerate(reply.chunks):
            if die_after is not None and index >= die_after:
                self._write(b"".join(pending))
                self._close()
                return
            wait = started + index * reply.interval_s - loop.time() if reply.interval_s else 0.0
            if wait > 0 or size >= COALESCE_BYTES:
                self._write(b"".join(pending))
                pending.clear()
                size = 0
                if wait > 0:
                    await asyncio.sleep(wait)
                if not self.writable.is_set():
                    await self.writable.wait()
                if self.closed:
                    return
            pending.append(frame(chunk))
            size += len(chunk)
        pending.append(LAST_CHUNK)
        self._write(b"".join(pending))
        if not req.keep_alive:
            self._close()

    def _write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        """Flush what was written, then FIN; nothing more is sent on this connection."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()
