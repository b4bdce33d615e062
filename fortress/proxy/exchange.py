"""One request in flight: pick a backend, send, relay the answer, retry before the first byte, account.

Retries happen only while nothing has reached the client (connect errors, resets before a response,
502/503 from a backend) and only when the request body is still at hand. Once bytes are relayed, a
failure ends the stream with one error line in the route's own shape and a clean close.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fortress.backends.kind import Refused, Rewrite
from fortress.http import replies
from fortress.pipeline.chain import Admit
from fortress.proxy import fanout
from fortress.proxy.upstream import UpstreamProtocol
from fortress.routing.choose import Choice, Verdict, Waiter

if TYPE_CHECKING:
    from fortress.backends.target import Target
    from fortress.proxy.protocol import ClientProtocol
    from fortress.proxy.worker import Worker

_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade", b"transfer-encoding")
)
_LAST_CHUNK = b"0\r\n\r\n"
# Routes that bring a model to a backend rather than use one there: any healthy backend will do.
_ANY_BACKEND = frozenset(("/api/pull", "/api/push", "/api/create", "/api/blobs/*"))


class Exchange:
    __slots__ = (
        "accounted",
        "admit",
        "attempts",
        "backend_hint",
        "body",
        "bytes_in",
        "bytes_out",
        "chunked_body",
        "client",
        "client_ip",
        "doc",
        "error",
        "fwd_headers",
        "http10",
        "keep_alive",
        "method",
        "model",
        "on_backend",
        "path",
        "pending",
        "raw",
        "request_id",
        "rewrite",
        "route",
        "status",
        "stream",
        "streaming_body",
        "t0",
        "target",
        "target_url",
        "task",
        "tried",
        "ttfb",
        "upstream",
        "w",
    )

    def __init__(
        self,
        w: Worker,
        client: ClientProtocol,
        admit: Admit,
        method: bytes,
        path: str,
        target_url: bytes,
        fwd_headers: list[bytes],
        request_id: bytes,
        http10: bool,
        keep_alive: bool,
        body: bytes | None,
        streaming_body: bool,
        chunked_body: bool,
        t0: float,
    ) -> None:
        self.w = w
        self.client = client
        self.admit = admit
        self.route = admit.route
        self.method = method
        self.path = path
        self.target_url = target_url
        self.fwd_headers = fwd_headers  # pre-rendered "Name: value\r\n" lines (client's, filtered)
        self.request_id = request_id
        self.http10 = http10
        self.keep_alive = keep_alive
        self.body = body  # None: the body streams through send_body()
        self.streaming_body = streaming_body  # the body follows via send_body() and cannot be replayed
        self.chunked_body = chunked_body
        self.pending: list[bytes] = []
        self.t0 = t0
        self.model = admit.model
        self.stream = False
        self.target: Target | None = None
        self.rewrite: Rewrite | None = None  # this attempt's request as its backend's kind rewrote it
        self.upstream: UpstreamProtocol | None = None
        self.tried: list[str] = []
        self.attempts = 0
        self.status = 0
        self.ttfb: float | None = None
        self.bytes_in = len(body) if body else 0
        self.bytes_out = 0
        self.error: str | None = None
        self.raw = not http10
        self.on_backend: str | None = None  # counted as outstanding on this backend
        self.accounted = False
        self.client_ip = ""
        self.backend_hint: str | None = None  # X-Fortress-Backend from an admin-scope key
        self.task: asyncio.Task[None] | None = None  # a fan-out to every backend (fanout.py)
        self.doc: dict | None = None  # the parsed JSON body, when the body stage read it

    # -- choosing and connecting -------------------------------------------------------------------
    def start(self) -> None:
        """Stage 9: ask the router for a backend, wait for a slot when all are busy, or fail clearly."""
        w = self.w
        if self.backend_hint is not None:
            name = self.backend_hint
            if name == fanout.ALL:
                self.task = fanout.start(self)
                return
            if name not in w.targets:
                self._fail(404, f"unknown backend '{name}' in X-Fortress-Backend")
                return
            w.router.started(name)
            self._go(name, self.model)
            return
        model = None if self.admit.route.name in _ANY_BACKEND else self.model
        choice = w.router.choose(model, exclude=frozenset(self.tried))
        if choice is not None:
            w.router.started(choice.backend.name)
            self._chosen(choice)
            return
        verdict = w.router.why(model)
        if verdict is Verdict.UNKNOWN_MODEL:
            self._fail(404, f"model '{model}' not found" if model else "no backend is configured")
        elif verdict is Verdict.BUSY and not self.tried:
            self._wait(model)
        elif verdict is Verdict.BUSY and self.tried:
            self._fail(502, f"backend {self.tried[-1]} failed and no other backend is available")
        else:
            self._fail(503, "no healthy backend is available")

    def _chosen(self, choice: Choice) -> None:
        """Go to the router's choice (already counted as started), under the name it knows the model by."""
        self._go(choice.backend.name, choice.model)

    def _wait(self, model: str | None) -> None:
        """Every backend with the model is at its cap: park in the router's fair queue, with a timeout."""
        w = self.w
        key_id = self.admit.key.id if self.admit.key else ""
        waiter = Waiter(model, lambda choice: self._granted(choice, timer))
        if not w.router.enqueue(key_id, waiter):
            self._fail(503, "all backends for this model are busy and the queue is full", retry_after=1)
            return

        def expire() -> None:
            if w.router.dequeue(key_id, waiter):
                self._fail(503, "all backends for this model stayed busy", retry_after=1)

        timer = w.loop.call_later(w.routing.queue_timeout_s, expire)

    def _granted(self, choice: Choice, timer: asyncio.TimerHandle) -> bool:
        timer.cancel()
        if self.client.closed or self.accounted:
            return False
        self.w.loop.call_soon(self._chosen, choice)
        return True

    def _go(self, name: str, model: str | None) -> None:
        """Connect to (or reuse a connection to) the chosen backend, already counted as started."""
        target = self.w.targets[name]
        self.target = target
        self.on_backend = name
        self.tried.append(name)
        self.attempts += 1
        try:
            self.rewrite = target.kind.rewrite(self, model)
        except Refused as exc:
            self._fail(exc.status, exc.message)
            return
        conn = self.w.pool.acquire(name)
        if conn is not None:
            self._send(conn)  # type: ignore[arg-type]
        else:
            self.w.loop.create_task(self._open(target))

    async def _open(self, target: Target) -> None:
        w = self.w
        try:
            _, conn = await asyncio.wait_for(
                w.loop.create_connection(
                    lambda: UpstreamProtocol(target.name),
                    target.host,
                    target.port,
                    ssl=target.ssl,
                    server_hostname=target.host if target.ssl else None,
                ),
                w.routing.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            self._retry_or_fail(f"cannot connect to backend {target.name}: {_reason(exc)}", unreachable=True)
            return
        w.pool.created += 1
        if self.client.closed:
            w.pool.release(target.name, conn)
            return
        self._send(conn)

    def _send(self, conn: UpstreamProtocol) -> None:
        target = self.target
        assert target is not None
        self.upstream = conn
        conn.send(self, self.request_bytes(target))
        if self.pending:
            for piece in self.pending:
                self._write_body(piece)
            self.pending = []
            self.client.resume_reading()

    def request_bytes(self, target: Target) -> bytes:
        """The request head (and a buffered body) as this backend must receive it."""
        rw = self.rewrite
        if rw is None:
            method, path, body, extra = self.method, self.target_url, self.body, b""
        else:
            method, path, body, extra = rw.method, rw.path, rw.body, rw.headers
        parts = [method, b" ", target.prefix, path, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\n"]
        parts += self.fwd_headers
        parts += (b"X-Request-ID: ", self.request_id, b"\r\n", target.auth_lines, extra)
        if body is not None:
            if body or method == b"POST":
                parts += (b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body)
            else:
                parts.append(b"\r\n")
        elif self.chunked_body:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    # -- request body streaming (uploads) ------------------------------------------------------------
    def send_body(self, piece: bytes) -> None:
        self.bytes_in += len(piece)
        if self.upstream is None:
            self.pending.append(piece)
            self.client.pause_reading()
        else:
            self._write_body(piece)

    def end_body(self) -> None:
        if self.chunked_body and self.streaming_body:
            self.send_body(b"")

    def _write_body(self, piece: bytes) -> None:
        up = self.upstream
        if up is None or up.transport is None:
            return
        up.transport.write(replies.chunk(piece) if self.chunked_body else piece)

    # -- the response --------------------------------------------------------------------------------
    def response_head(self, up: UpstreamProtocol, body_start: bytes) -> bool:
        """Send the rewritten head with the first body bytes (one write); False to drop it for a retry."""
        status = up.status
        if status in (502, 503) and self._can_retry():
            up.ex = None
            up.close()
            self.upstream = None
            self._retry_or_fail(f"backend {up.backend} answered {status}")
            return False
        if status == 404 and self.model and self.admit.route.inspect:
            self.w.model_missing(up.backend, self.model)
        self.status = status
        self.ttfb = time.monotonic()
        client_close = not self.keep_alive or self.w.draining
        parts = [replies.status_line(status)]
        for name, value in up.headers:
            if name.lower() in _HOP:
                if self.raw and name.lower() == b"transfer-encoding":
                    parts += (name, b": ", value, b"\r\n")
                continue
            parts += (name, b": ", value, b"\r\n")
        parts += (b"X-Request-ID: ", self.request_id, b"\r\n")
        for name, value in self.admit.rate_headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.raw:
            client_close = True  # HTTP/1.0 client: decoded body, delimited by the close
        self.keep_alive = not client_close
        parts.append(b"Connection: close\r\n\r\n" if client_close else b"\r\n")
        parts.append(body_start)
        self.to_client(b"".join(parts))
        return True

    def to_client(self, data: bytes) -> None:
        self.bytes_out += len(data)
        transport = self.client.transport
        if transport is not None:
            transport.write(data)

    def response_done(self, up: UpstreamProtocol, reuse: bool) -> None:
        self.upstream = None
        target = self.target
        assert target is not None
        if reuse:
            self.w.pool.release(target.name, up)
        prompt = completion = None
        failed = False
        if self.admit.route.metered or up.chunked:
            prompt, completion, failed = target.kind.usage(up.tail)
        if failed:
            self.error = "backend reported an error mid-stream"
        self.stream = up.chunked
        self._release_backend(ok=self.status < 500 and not failed, error=self.error or "")
        if self.admit.route.model_admin:
            self.w.poller.poke(target.name)  # pull/delete/copy/create change what the backend holds
        self._account(prompt, completion)
        self.client.exchange_done(self.keep_alive)

    def upstream_lost(self, up: UpstreamProtocol) -> None:
        self.upstream_broken(f"backend {up.backend} closed the connection", up)

    def upstream_broken(self, message: str, up: UpstreamProtocol | None = None) -> None:
        up = up or self.upstream
        self.upstream = None
        if up is not None:
            up.ex = None
            up.close()
        if up is None or not up.head_sent:
            self._retry_or_fail(message)
            return
        self._cut(message, up)

    def timed_out(self, first_byte: bool) -> None:
        """Called by the worker's sweeper when the backend is silent for too long."""
        up = self.upstream
        if first_byte and (up is None or not up.head_sent):
            self.upstream = None
            if up is not None:
                up.ex = None
                up.close()
            self._fail(504, f"backend {self.target.name if self.target else ''} did not answer in time")
            return
        if up is not None:
            self.upstream = None
            up.ex = None
            up.close()
            self._cut("backend stopped sending data (idle timeout)", up)

    def _cut(self, message: str, up: UpstreamProtocol) -> None:
        """The stream already started: end it with one error line and the response's proper end.

        With chunked framing intact the connection stays open: a pooled client may reuse it at once,
        and closing it then would fail a request that never reached a backend. Otherwise it closes.
        """
        self.error = message
        framed = self.raw and up.chunked and not up.in_chunk
        if framed:
            line = replies.stream_error_line(message, self.admit.route.openai)
            self.to_client(replies.chunk(line) + _LAST_CHUNK)
        elif not self.raw:
            self.to_client(replies.stream_error_line(message, self.admit.route.openai))
        self._release_backend(ok=False, error=message)
        assert self.target is not None
        prompt, completion, _ = self.target.kind.usage(up.tail)
        self._account(prompt, completion)
        self.client.exchange_done(framed and self.keep_alive)

    # -- retries and failures ------------------------------------------------------------------------
    def _can_retry(self, delay: float = 0.0) -> bool:
        if self.streaming_body or self.backend_hint is not None:
            return False  # the body went upstream as it came, or the client named the backend
        elapsed = time.monotonic() - self.t0 + delay
        return self.w.router.may_retry(self.attempts, elapsed)

    def _retry_or_fail(self, message: str, unreachable: bool = False) -> None:
        """Try another backend if allowed; else 503 when none could be reached, 502 when one failed."""
        self._release_backend(ok=False, error=message)
        if self.client.closed:
            self._account(None, None)
            return
        delay = self.w.router.retry_delay(self.attempts)
        if self._can_retry(delay):
            self.w.loop.call_later(delay, self.start)
            return
        self._fail(503 if unreachable else 502, message)

    def _fail(self, status: int, message: str, retry_after: int = 0) -> None:
        self.status = status
        self.error = message
        self._release_backend(ok=status != 504, error=message)
        if self.upstream is not None:
            self.upstream.ex = None
            self.upstream.close()
            self.upstream = None
        headers = self.admit.rate_headers
        if retry_after:
            headers = ((b"Retry-After", str(retry_after).encode()), *headers)
        reply = replies.error_reply(status, message, self.admit.route.openai, headers=headers)
        keep = self.keep_alive and not self.streaming_body
        self.to_client(replies.render(reply, self.request_id, keep, head_only=self.method == b"HEAD"))
        self._account(None, None)
        self.client.exchange_done(keep)

    def client_lost(self) -> None:
        """The client went away mid-exchange: stop the backend's work and record it."""
        if self.task is not None:
            self.task.cancel()
        up = self.upstream
        self.upstream = None
        if up is not None:
            up.ex = None
            up.close()
        self._release_backend(ok=True)
        if not self.status:
            self.status = 499
        self.error = self.error or "client closed the connection"
        self._account(None, None)

    def _release_backend(self, ok: bool, error: str = "") -> None:
        """Tell the router this backend's request ended; exactly once per started attempt."""
        if self.on_backend is not None:
            self.w.finished(self.on_backend, ok, error)
            self.on_backend = None

    def _account(self, prompt: int | None, completion: int | None) -> None:
        if not self.accounted:
            self.accounted = True
            self.w.account(self, prompt, completion)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else type(exc).__name__
