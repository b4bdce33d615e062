"""The one client for control calls to a backend: health probes, inventory, fan-out, admin operations.

Used by the inventory poller, the `X-Fortress-Backend: *` fan-out, the admin and the CLI, so they all
reach a backend exactly as the proxy does: through its Target (address, TLS with its CA bundle, Host,
path prefix, the kind's authentication). HTTP/1.1 framing is h11's; one connection per client, kept
alive between calls when the backend allows it. Client traffic never goes through here: the hot path
has its own pool (fortress/proxy/pool.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import h11

from fortress.backends.kind import Probe
from fortress.backends.target import Target

MAX_BODY = 16 * 1024 * 1024  # a /api/tags of thousands of models is a few MiB at most
_READ = 64 * 1024
# What a control call sends besides Host and the kind's authentication; callers relaying a client's
# request (fan-out) pass that request's headers instead.
HeaderPairs = Iterable[tuple[str | bytes, str | bytes]]
CONTROL_HEADERS: HeaderPairs = (("User-Agent", "fortress"), ("Accept", "application/json"))


class BackendError(Exception):
    """A call failed: connect error, TLS error, timeout (`timeout` set), broken or oversized answer.

    The message names the call and the cause in full ("GET /api/tags: ConnectionRefusedError: ...");
    `reason` is the cause in a few words ("Connection refused").
    """

    def __init__(self, what: str, reason: str, timeout: bool = False, detail: str = "") -> None:
        super().__init__(f"{what}: {detail or reason}")
        self.reason = reason
        self.timeout = timeout

    @classmethod
    def of(cls, what: str, exc: BaseException) -> BackendError:
        text = str(exc)
        detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else detail
        return cls(what, reason, detail=detail)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        """The parsed body; ValueError if it is not JSON."""
        return json.loads(self.body)

    def ok_json(self, path: str) -> Any:
        """The JSON of a 200 answer; ValueError naming the path otherwise."""
        if self.status != 200:
            raise ValueError(f"GET {path}: HTTP {self.status}")
        return self.json()


class Response:
    """A response whose body is still arriving: `status`, then `pieces()` or `read()`."""

    def __init__(self, client: BackendClient, what: str, status: int, idle_timeout_s: float) -> None:
        self.status = status
        self.what = what  # "METHOD path", for error messages
        self._client = client
        self._idle_timeout_s = idle_timeout_s
        self.complete = False

    async def pieces(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive; BackendError when the backend stalls or closes mid-way."""
        while not self.complete:
            data = await self._client._next_data(self.what, self._idle_timeout_s)
            if data is None:
                self.complete = True
            elif data:
                yield data

    async def read(self, limit: int = MAX_BODY) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for piece in self.pieces():
            size += len(piece)
            if size > limit:
                raise BackendError(self.what, f"answer larger than {limit} bytes")
            chunks.append(piece)
        return b"".join(chunks)


class BackendClient:
    """Calls to one backend; `timeout_s` bounds connecting plus waiting for the answer's head."""

    def __init__(self, target: Target, *, timeout_s: float = 3.0, keep_alive: bool = True) -> None:
        self.target = target
        self._base = [("Host", target.host_header), *target.auth]
        if not keep_alive:
            self._base.append(("Connection", "close"))
        self._keep_alive = keep_alive
        self.timeout_s = timeout_s
        self._conn: h11.Connection | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    # -- whole answers ---------------------------------------------------------------------------
    async def get(self, path: str, max_body: int = MAX_BODY) -> Reply:
        """GET prefix+path, the whole answer within the timeout; a kept-alive connection the backend
        closed meanwhile is retried once on a fresh one."""
        reused = self._conn is not None
        try:
            return await self.request("GET", path, max_body=max_body)
        except BackendError:
            if not reused:
                raise
        return await self.request("GET", path, max_body=max_body)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: HeaderPairs = CONTROL_HEADERS,
        *,
        max_body: int = MAX_BODY,
    ) -> Reply:
        """One call whose whole answer must arrive within the timeout."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self.stream(method, path, body, headers) as response:
                    return Reply(response.status, await response.read(max_body))
        except TimeoutError:
            raise self._lost(f"{method} {path}", f"no answer within {self.timeout_s:g}s") from None

    # -- streamed answers ------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: HeaderPairs = CONTROL_HEADERS,
        idle_timeout_s: float | None = None,
    ) -> AsyncIterator[Response]:
        """Send a request; yield its Response once the head arrived (within the timeout). Its body then
        comes piece by piece, each within `idle_timeout_s` (default: the timeout)."""
        idle = self.timeout_s if idle_timeout_s is None else idle_timeout_s
        response: Response | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                status = await self._send(method, path, body, headers)
            response = Response(self, f"{method} {path}", status, idle)
            yield response
        except TimeoutError:
            raise self._lost(f"{method} {path}", f"no answer within {self.timeout_s:g}s") from None
        except (OSError, h11.ProtocolError) as exc:
            raise self._lost(f"{method} {path}", exc) from None
        except BaseException:
            self._drop()
            raise
        finally:
            if response is not None and not response.complete:
                self._drop()  # the caller stopped reading: the connection is mid-response
        self._next_cycle()

    async def _send(self, method: str, path: str, body: bytes | None, headers: HeaderPairs) -> int:
        if self._conn is None:
            t = self.target
            self._reader, self._writer = await asyncio.open_connection(
                t.host, t.port, ssl=t.ssl, server_hostname=t.host if t.ssl else None
            )
            self._conn = h11.Connection(h11.CLIENT)
        conn, writer = self._conn, self._writer
        assert writer is not None
        fields = [*self._base, *headers]
        if body is not None:
            fields.append(("Content-Length", str(len(body))))
        target = self.target.prefix + path.encode("latin-1")
        writer.write(conn.send(h11.Request(method=method, target=target, headers=fields)))
        if body:
            writer.write(conn.send(h11.Data(data=body)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        while True:
            event = await self._event()
            if isinstance(event, h11.Response):
                return event.status_code
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("connection closed before the answer")

    async def _next_data(self, what: str, timeout_s: float) -> bytes | None:
        """The next body bytes, b"" for nothing of note, None at the end of the body."""
        try:
            async with asyncio.timeout(timeout_s):
                event = await self._event()
        except TimeoutError:
            raise self._lost(what, f"no data for {timeout_s:g}s") from None
        except (OSError, h11.ProtocolError) as exc:
            raise self._lost(what, exc) from None
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise self._lost(what, ConnectionError("connection closed before the answer ended"))
        return b""

    async def _event(self) -> Any:
        conn, reader = self._conn, self._reader
        if conn is None or reader is None:
            raise ConnectionError("connection closed")
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await reader.read(_READ))

    def _next_cycle(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if self._keep_alive and conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            self._drop()

    def _lost(self, what: str, cause: str | BaseException) -> BackendError:
        """Drop the connection (it stopped mid-exchange) and describe the failure: a timeout or an error."""
        self._drop()
        if isinstance(cause, str):
            return BackendError(what, cause, timeout=True)
        return BackendError.of(what, cause)

    def _drop(self) -> None:
        """Forget the connection; the transport closes in the background."""
        writer, self._conn, self._reader, self._writer = self._writer, None, None, None
        if writer is not None:
            writer.close()

    async def aclose(self) -> None:
        writer = self._writer
        self._drop()
        if writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def __aenter__(self) -> BackendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def probe(target: Target, *, models: bool = True, timeout_s: float = 3.0) -> Probe:
    """Look at a backend once, as its kind does (for the CLI and the admin); never raises."""
    async with BackendClient(target, timeout_s=timeout_s, keep_alive=models) as client:
        start = time.perf_counter()
        try:
            result = await target.kind.probe(client, models)
        except (BackendError, ValueError, KeyError, TypeError) as exc:
            return Probe(ok=False, error=str(exc) or type(exc).__name__)
        result.latency_ms = (time.perf_counter() - start) * 1000
        return result
