"""One request in flight: choose a backend, send, relay the answer, retry before the first byte, account.

Its life is the state table in states.py (CHOOSING → CONNECTING → SENT → RELAYING → DONE, with WAITING,
RETRY, CUT, FAILED and GONE); every move is looked up in the table, which refuses any it does not list
(`_to()`, or its one line written out on the four moves every request makes).
Retries happen only while nothing has reached the client (connect errors, resets before a response,
502/503 from a backend) and only when the request body is still at hand. Once bytes are relayed, a
failure ends the stream with one error line in the route's own shape and a clean close.

The exchange sees the client only through a Downstream (write, pause, resume, done) and its worker
only through a Host; backend connections come from the pool and report through upstream.Receiver.
A backend kind may rewrite the request and hand a response codec: then the body arrives decoded, goes
through the codec, and Fortress frames what it returns (docs/architecture.md, "The codec hook").

Every ending (`_end`) records the usage row first and only then writes the response's last bytes:
the read that completes a response comes with `complete()` instead of being relayed, a head that
arrives with the whole body is held until then, and errors, cuts and composed answers hand their
last bytes to `_end`. On a cluster node the worker's outbox hands the rows recorded during a loop turn
to the usage producer before it sends the turn's writes (fortress.proxy.usage_pipe), so the row is in
the producer's pipe when the client can first have its whole answer, and a SIGKILL of the proxy cannot
lose the row of a request its client saw complete. Both halves are needed: the outbox also sends at once,
mid-turn, once 64 KiB are queued (outbox.HOLD_BYTES), and a row recorded before its last bytes are queued
is handed over by that burst too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Protocol

from fortress.backends.kind import Refused
from fortress.http import replies
from fortress.http.replies import STATUS_LINE
from fortress.proxy.states import FINAL, TRANSITIONS, Event, State
from fortress.routing.choose import Choice, Verdict, Waiter
from fortress.routing.health import answered

if TYPE_CHECKING:
    from fortress.backends.codec import Codec
    from fortress.backends.kind import Rewrite
    from fortress.backends.target import Target
    from fortress.config import RoutingConfig
    from fortress.pipeline.chain import Admit
    from fortress.proxy.pool import Pool
    from fortress.proxy.upstream import UpstreamProtocol
    from fortress.routing.choose import Router
    from fortress.routing.poller import InventoryPoller
    from fortress.search.service import WebSearch

# Python 3.11 reads an Enum member through its class with a descriptor call (~170 ns, a global ~15): the
# states and moves every request passes through are read from these copies.
_CHOOSING, _CONNECTING = State.CHOOSING, State.CONNECTING
_CHOSEN, _SENT, _HEAD, _COMPLETE = Event.CHOSEN, Event.SENT, Event.HEAD, Event.COMPLETE
_CLOSE_HEAD = b"Connection: close\r\n\r\n"
# Routes that bring a model to a backend rather than use one there: any healthy backend will do.
_ANY_BACKEND = frozenset(("/api/pull", "/api/push", "/api/create", "/api/blobs/*"))
_NEVER = float("inf")
_NONE: frozenset[str] = frozenset()


class Downstream(Protocol):
    """The client side, as the exchange needs it (the ClientProtocol in protocol.py)."""

    def write(self, data: bytes) -> None:
        """Bytes to the client, as they are."""

    def pause(self) -> None:
        """Stop reading the client's request body (the backend is not taking it yet)."""

    def resume(self) -> None:
        """Read the client's request body again."""

    def done(self, keep_alive: bool) -> None:
        """The response is complete (or failed): serve the next request, or close."""


class Host(Protocol):
    """What the exchange needs of its worker (worker.py)."""

    loop: asyncio.AbstractEventLoop
    pool: Pool
    router: Router
    poller: InventoryPoller
    targets: dict[str, Target]
    routing: RoutingConfig
    draining: bool
    search: WebSearch | None

    def account(self, ex: Exchange, prompt: int | None, completion: int | None) -> None: ...

    def finished(self, backend: str, ok: bool, error: str = "") -> None: ...

    def model_missing(self, backend: str, model: str) -> None: ...

    def refresh_models(self, then: Callable[[], None]) -> bool: ...

    def served(self, backend: str, model: str, doc: dict | None) -> None: ...


class Exchange:
    __slots__ = (
        "__dict__",
        "admit",
        "backend_hint",
        "body",
        "bytes_in",
        "bytes_out",
        "chunked_body",
        "client_ip",
        "codec",
        "cors",
        "doc",
        "down",
        "error",
        "fwd_headers",
        "held",
        "keep_alive",
        "method",
        "model",
        "on_backend",
        "path",
        "raw",
        "request_id",
        "route",
        "state",
        "status",
        "stream",
        "streaming_body",
        "t0",
        "target",
        "target_url",
        "tried",
        "ttfb",
        "upstream",
        "w",
    )

    # Set on few requests (a composed answer's task, a second look at the backends' models, a client not
    # taking our writes, upload pieces held while connecting): class-level defaults, which a request that
    # sets one shadows in its own __dict__ (made only then), so that every other request spares the stores.
    task: asyncio.Task[None] | None = None  # the task composing the answer (answered_by)
    looked_again = False  # an unknown model made the backends list their models once more
    blocked = False  # the client is not taking our writes (its transport paused us)
    pending: tuple[bytes, ...] = ()  # pieces of a streamed body that came before the connection
    codec: Codec | None  # set by every attempt (_go) before anything reads it; None: raw relay

    def __init__(
        self,
        w: Host,
        down: Downstream,
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
        client_ip: str = "",
        cors: bytes = b"",
        doc: dict | None = None,
    ) -> None:
        self.w = w
        self.down = down
        self.admit = admit
        self.route = admit.route
        self.method = method
        self.path = path
        self.target_url = target_url
        self.fwd_headers = fwd_headers  # pre-rendered "Name: value\r\n" lines (client's, filtered)
        self.request_id = request_id
        self.keep_alive = keep_alive
        self.body = body  # None: the body streams through send_body()
        self.streaming_body = streaming_body  # the body follows via send_body() and cannot be replayed
        self.chunked_body = chunked_body
        self.t0 = t0
        self.model = admit.model
        self.state: State = _CHOOSING
        self.stream = False
        self.target: Target | None = None
        self.upstream: UpstreamProtocol | None = None
        self.tried: list[str] = []  # the backends of this request's attempts, in order
        self.status = 0
        self.ttfb: float | None = None
        self.bytes_in = len(body) if body else 0
        self.bytes_out = 0
        self.held = b""  # a whole response's head and body, sent by _end() after the usage row
        self.error: str | None = None
        self.raw = not http10  # HTTP/1.1 client: the backend's framing passes through
        self.on_backend: str | None = None  # counted as outstanding on this backend
        self.client_ip = client_ip
        self.backend_hint: str | None = None  # X-Fortress-Backend from an admin-scope key
        self.doc = doc  # the parsed JSON body, when the body stage read it
        self.cors = cors  # CORS header lines for the client's Origin (pipeline/cors.py), b"" for none

    def _to(self, event: Event) -> None:
        """Move by the table (states.step inlined; the four moves of every request inline this line)."""
        self.state = TRANSITIONS[self.state][event]  # IllegalTransition for a move it does not list

    # -- choosing and connecting -------------------------------------------------------------------
    def start(self) -> None:
        """Stage 9: ask the router for a backend, wait for a slot when all are busy, or fail clearly."""
        w = self.w
        if self.backend_hint is not None:
            name = self.backend_hint
            if name not in w.targets:
                self.fail(404, f"unknown backend '{name}' in X-Fortress-Backend")
                return
            w.router.started(name)
            self._to(_CHOSEN)
            self.on_backend = name
            self._go(name, self.model)
            return
        model = None if self.route.name in _ANY_BACKEND else self.model
        choice = w.router.choose(model, exclude=frozenset(self.tried) if self.tried else _NONE)
        if choice is not None:
            name = choice.backend.name
            w.router.started(name)
            self.state = TRANSITIONS[self.state][_CHOSEN]
            self.on_backend = name
            self._go(name, choice.model)
            return
        verdict = w.router.why(model)
        if verdict is Verdict.UNKNOWN_MODEL:
            if model and not self.looked_again:  # pulled on a backend directly a moment ago?
                self.looked_again = True
                if w.refresh_models(partial(self._later, _CHOOSING, self.start)):
                    return
            self.fail(404, f"model '{model}' not found" if model else "no backend is configured")
        elif verdict is Verdict.BUSY and not self.tried:
            self._wait(model)
        elif verdict is Verdict.BUSY and self.tried:
            self.fail(502, f"backend {self.tried[-1]} failed and no other backend is available")
        else:
            self.fail(503, "no healthy backend is available")

    def _wait(self, model: str | None) -> None:
        """Every backend with the model is at its cap: park in the router's fair queue, with a timeout."""
        w = self.w
        key_id = self.admit.key.id if self.admit.key else ""
        waiter = Waiter(model, lambda choice: self._granted(choice, timer))
        if not w.router.enqueue(key_id, waiter):
            self.fail(503, "all backends for this model are busy and the queue is full", retry_after=1)
            return
        self._to(Event.QUEUED)

        def expire() -> None:
            if w.router.dequeue(key_id, waiter) and self.state is State.WAITING:
                self.fail(503, "all backends for this model stayed busy", retry_after=1)

        timer = w.loop.call_later(w.routing.queue_timeout_s, expire)

    def _granted(self, choice: Choice, timer: asyncio.TimerHandle) -> bool:
        """A slot freed up (called from inside the router: the connect runs on the next loop turn)."""
        timer.cancel()
        if self.state is not State.WAITING:
            return False  # the client left meanwhile: the router takes the slot back
        self._to(Event.GRANTED)
        self.on_backend = choice.backend.name  # already counted as started
        self.w.loop.call_soon(self._later, _CONNECTING, self._go, choice.backend.name, choice.model)
        return True

    def _go(self, name: str, model: str | None) -> None:
        """Rewrite the request for the backend's kind, then reuse a pooled connection or open one.

        The backend is already counted as started; `model` is the name it knows the model by (a
        provider's own name)."""
        w = self.w
        target = self.target = w.targets[name]
        self.tried.append(name)
        try:
            rewrite = target.kind.rewrite(self, model)  # type: ignore[arg-type]
        except Refused as exc:
            self.fail(exc.status, exc.message)
            return
        if rewrite is None:
            self.codec = None
        elif rewrite.local is not None:
            self._answered(rewrite.local)
            return
        else:
            self.codec = rewrite.codec
        conn = w.pool.acquire(name)
        if conn is not None:
            self._send(conn, target, rewrite)
        else:
            w.loop.create_task(self._open(target, rewrite))

    def _later(self, state: State, step: Callable[..., None], *args: object) -> None:
        """A step put off to a later loop turn (a retry's pause, a second look at the models, a granted
        slot's connect): taken only if the exchange is still where it was left (the client may be gone)."""
        if self.state is state:
            step(*args)

    async def _open(self, target: Target, rewrite: Rewrite | None) -> None:
        w = self.w
        try:
            conn = await w.pool.open(target, w.routing.connect_timeout_s)
        except (OSError, TimeoutError) as exc:
            if self.state is _CONNECTING:
                self._retry_or_fail(
                    f"cannot connect to backend {target.name}: {_reason(exc)}", unreachable=True
                )
            return
        if self.state is not _CONNECTING:
            w.pool.release(conn)  # the client left meanwhile: the fresh connection serves someone else
            return
        self._send(conn, target, rewrite)

    def _send(self, conn: UpstreamProtocol, target: Target, rw: Rewrite | None) -> None:
        """The request head (and a buffered body) on `conn`, as this backend must receive it (`rw`: as its
        kind rewrote it, None: as it came); then the body pieces that came meanwhile."""
        self.state = TRANSITIONS[self.state][_SENT]
        self.upstream = conn
        fwd = self.fwd_headers
        if rw is None:
            method = self.method
            path = self.target_url
            body = self.body
            extra = b""
        else:
            method, path, body, extra = rw.method, rw.path, rw.body, rw.headers
            if rw.drop:
                fwd = [line for line in fwd if not line.lower().startswith(rw.drop)]
        parts = [
            method,
            b" ",
            target.prefix,
            path,
            b" HTTP/1.1\r\nHost: ",
            target.host_header,
            b"\r\nX-Request-ID: ",
            self.request_id,
            b"\r\n",
            target.auth_lines,
            extra,
            *fwd,
        ]
        if body is not None:
            if body or method == b"POST":
                parts += (b"Content-Length: %d\r\n\r\n" % len(body), body)
            else:
                parts.append(b"\r\n")
        elif self.chunked_body:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        else:
            parts.append(b"\r\n")
        conn.send(self, b"".join(parts), self.codec is not None or not self.raw, self.method == b"HEAD")
        if self.streaming_body and self.pending:  # (only a streamed body has pieces held)
            for piece in self.pending:
                self._write_body(piece)
            self.pending = ()
            self.down.resume()

    # -- request body streaming (uploads) ------------------------------------------------------------
    def send_body(self, piece: bytes) -> None:
        self.bytes_in += len(piece)
        if self.upstream is None:
            self.pending += (piece,)
            self.down.pause()
        else:
            self._write_body(piece)

    def end_body(self) -> None:
        if self.chunked_body and self.streaming_body:
            self.send_body(b"")

    def _write_body(self, piece: bytes) -> None:
        up = self.upstream
        if up is None or up.transport is None:
            return
        up.write(replies.chunk(piece) if self.chunked_body else piece)

    def backend_blocked(self, blocked: bool) -> None:
        """The backend's side of upload backpressure: stop or resume reading the client."""
        if blocked:
            self.down.pause()
        else:
            self.down.resume()

    def client_blocked(self, blocked: bool) -> None:
        """The client's side of download backpressure: stop or resume reading the backend."""
        self.blocked = blocked
        up = self.upstream
        if up is not None and up.flow is not None:
            if blocked:
                up.flow.pause_reading()
            else:
                up.flow.resume_reading()

    # -- the response (upstream.Receiver) ------------------------------------------------------------
    def head(self, up: UpstreamProtocol, body: bytes) -> bool:
        """The response head: relay it rewritten (or the codec's), with the first body bytes in one write.
        False to drop it for a retry."""
        status = up.status
        if status >= 404:  # a failed backend is retried elsewhere; a missing model updates the inventory
            if status in (502, 503) and self._can_retry():
                self._retry_or_fail(f"backend {up.backend} answered {status}")
                return False
            if status == 404 and self.model and self.route.inspect:
                self.w.model_missing(up.backend, self.model)
        self.state = TRANSITIONS[self.state][_HEAD]
        self.ttfb = monotonic()
        codec = self.codec
        if codec is not None:
            status, content_type = codec.head(status, up.headers)
            self.status = status
            data = self._own_head(status, content_type)
        else:
            self.status = status
            keep = self.keep_alive = self.keep_alive and up.framed and self.raw and not self.w.draining
            # the backend's lines, but those no client gets (upstream.on_header), between Fortress's own
            parts = [STATUS_LINE[status], *up.lines, b"X-Request-ID: ", self.request_id, b"\r\n", self.cors]
            if not up.dated:
                parts.append(replies.date_line())
            for name, value in self.admit.rate_headers:
                parts += (name, b": ", value, b"\r\n")
            parts += (b"\r\n" if keep else _CLOSE_HEAD, body)
            data = b"".join(parts)
        if up.done:  # the whole response came: its bytes go after the usage row (complete() follows)
            self.held = data
        else:
            self._write(data)
        return True

    def _own_head(self, status: int, content_type: bytes) -> bytes:
        """The head of a response whose body Fortress frames itself (a codec's, a fan-out's)."""
        close = not self.keep_alive or self.w.draining or not self.raw
        self.keep_alive = not close
        parts = [STATUS_LINE[status], b"Content-Type: ", content_type, b"\r\nX-Request-ID: "]
        parts += (self.request_id, b"\r\n", replies.date_line(), self.cors)
        for name, value in self.admit.rate_headers:
            parts += (name, b": ", value, b"\r\n")
        if self.raw:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        parts.append(_CLOSE_HEAD if close else b"\r\n")
        return b"".join(parts)

    def relay(self, data: bytes) -> None:
        """Raw mode: the backend's bytes, straight to the client."""
        self.bytes_out += len(data)
        self.down.write(data)

    def decoded(self, data: bytes) -> None:
        """Decoded mode: through the codec when there is one, framed by Fortress; else as they are
        (an HTTP/1.0 client, whose body ends with the connection)."""
        codec = self.codec
        if codec is None:
            self._write(data)
        else:
            self._framed(codec.feed(data))

    def _framed(self, data: bytes) -> None:
        if data:
            self._write(self._frame(data))

    def _frame(self, data: bytes) -> bytes:
        """Body bytes Fortress frames itself, as this client gets them: a chunk (HTTP/1.1) or as they are."""
        return (replies.chunk(data) if self.raw else data) if data else b""

    def _write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.down.write(data)

    def complete(self, up: UpstreamProtocol, last: bytes) -> None:
        """The response is fully framed: the connection goes back to the pool, the usage is recorded,
        then `last` (the response's last bytes, as they came or decoded) goes out."""
        self.state = TRANSITIONS[self.state][_COMPLETE]
        target = self.target
        assert target is not None
        route = self.route
        codec = self.codec
        if codec is not None:
            last = self._frame(codec.feed(last)) if last else b""
            last += self._frame(codec.end())
            if self.raw:
                last += replies.LAST_CHUNK
            prompt, completion = codec.prompt_tokens, codec.completion_tokens
        elif route.metered or up.chunked:
            prompt, completion, failed = target.kind.usage(up.tail)
            if failed:
                self.error = "backend reported an error mid-stream"
        else:
            prompt = completion = None
        status = self.status
        self.stream = up.chunked
        self._end_attempt(True, status < 500 or answered(status, up.tail), self.error or "")
        if route.metered and status == 200 and self.model:
            self.w.served(target.name, self.model, self.doc)  # so /api/ps lists it at once
        if route.model_admin:
            self.w.poller.poke(target.name)  # pull/delete/copy/create change what the backend holds
        self._end(prompt, completion, self.keep_alive, last)

    def broken(self, message: str) -> None:
        """The backend's connection failed: retry if nothing reached the client, else cut the stream."""
        if self.state is State.RELAYING:
            self._cut(message)
        elif self.state is State.SENT:
            self._retry_or_fail(message)

    # -- deadlines -----------------------------------------------------------------------------------
    def deadline(self, now: float) -> float:
        """When the backend counts as silent (the sweeper asks twice a second; inf: not now)."""
        up = self.upstream
        if up is None or (self.blocked and self.state is State.RELAYING):
            return _NEVER  # connecting has its own timeout; a slow client is not a silent backend
        routing = self.w.routing
        return up.deadline(now, routing.first_byte_timeout_s, routing.idle_timeout_s)

    def expire(self, now: float) -> None:
        """Past the deadline: 504 when no byte came yet, else end the stream as cut."""
        if self.state is State.SENT:
            name = self.target.name if self.target else ""
            self.fail(504, f"backend {name} did not answer in time")
        elif self.state is State.RELAYING:
            self._cut("backend stopped sending data (idle timeout)")

    # -- endings -------------------------------------------------------------------------------------
    def _cut(self, message: str) -> None:
        """The stream already started: end it with one error line and the response's proper end.

        With framing intact the connection stays open: a pooled client may reuse it at once, and
        closing it then would fail a request that never reached a backend. Otherwise it closes.
        """
        self._to(Event.BROKEN)
        up = self.upstream
        assert up is not None and self.target is not None
        self._end_attempt(reuse=False, ok=False, error=message)
        self.error = message
        codec = self.codec
        last = b""
        if codec is not None:
            last = self._frame(codec.cut(message))
            framed = self.raw
            if framed:
                last += replies.LAST_CHUNK
            prompt, completion = codec.prompt_tokens, codec.completion_tokens
        else:
            framed = self.raw and up.chunked and not up.in_chunk
            if framed:
                line = replies.stream_error_line(message, self.route.shape)
                last = replies.chunk(line) + replies.LAST_CHUNK
            elif not self.raw:
                last = replies.stream_error_line(message, self.route.shape)
            prompt, completion, _ = self.target.kind.usage(up.tail)
        self._end(prompt, completion, framed and self.keep_alive, last)

    def _can_retry(self, delay: float = 0.0) -> bool:
        if self.streaming_body or self.backend_hint is not None:
            return False  # the body went upstream as it came, or the client named the backend
        elapsed = monotonic() - self.t0 + delay
        return self.w.router.may_retry(len(self.tried), elapsed)

    def _retry_or_fail(self, message: str, unreachable: bool = False) -> None:
        """Try another backend if allowed; else 503 when none could be reached, 502 when one failed."""
        self._end_attempt(reuse=False, ok=False, error=message)
        delay = self.w.router.retry_delay(len(self.tried))
        if self._can_retry(delay):
            self._to(Event.RETRY)
            self.w.loop.call_later(delay, self._later, _CHOOSING, self.start)
            return
        self.fail(503 if unreachable else 502, message)

    def fail(self, status: int, message: str, retry_after: int = 0) -> None:
        """Answer an error in the route's shape before any response byte went out."""
        self._to(Event.FAIL)
        self.status = status
        self.error = message
        self._end_attempt(reuse=False, ok=status != 504, error=message)
        headers = self.admit.rate_headers
        if retry_after:
            headers = ((b"Retry-After", str(retry_after).encode()), *headers)
        reply = replies.error_reply(status, message, self.route.shape, headers=headers)
        keep = self.keep_alive and not self.streaming_body
        head_only = self.method == b"HEAD"
        rendered = replies.render(reply, self.request_id, keep, head_only=head_only, cors=self.cors)
        self._end(None, None, keep, rendered)

    def _answered(self, body: bytes) -> None:
        """The backend's kind answered itself (a provider model's load or unload): 200, nothing sent."""
        self._to(Event.ANSWERED)
        self.ttfb = monotonic()
        self.status = 200
        self._end_attempt(reuse=False, ok=True)
        keep = self.keep_alive and not self.w.draining
        reply = replies.LocalReply(200, body)
        self._end(None, None, keep, replies.render(reply, self.request_id, keep, self.admit.rate_headers))

    def client_lost(self) -> None:
        """The client went away mid-exchange: stop the backend's work and record it."""
        if self.state in FINAL:
            return
        self._to(Event.CLIENT_GONE)
        if self.task is not None:
            self.task.cancel()
        self._end_attempt(reuse=False, ok=True)
        if not self.status:
            self.status = 499
        self.error = self.error or "client closed the connection"
        self.w.account(self, None, None)

    def _end_attempt(self, reuse: bool, ok: bool, error: str = "") -> None:
        """This attempt is over (or never got a connection): its connection goes back to the pool's idle
        set (`reuse`) or is closed, and the router hears whether the backend did its part, exactly once
        per started attempt. Both may be gone already: a second call does nothing."""
        up = self.upstream
        if up is not None:
            self.upstream = None
            if reuse:
                self.w.pool.release(up)
            else:
                self.w.pool.discard(up)
        name = self.on_backend
        if name is not None:
            self.on_backend = None
            self.w.finished(name, ok, error)

    def _end(self, prompt: int | None, completion: int | None, keep_alive: bool, last: bytes = b"") -> None:
        """Record the usage row, then send the response's last bytes (and any held) and let the client
        side go on: see the module docstring for why in this order."""
        held = self.held
        if held:
            last = held + last
        self.bytes_out += len(last)
        self.w.account(self, prompt, completion)
        down = self.down
        if last:
            down.write(last)
        down.done(keep_alive)

    # -- a response Fortress composes itself (fan-out, web search) -------------------------------------
    def answered_by(self, task: asyncio.Task[None]) -> None:
        """`task` composes the answer: the merged answers of every backend (fanout.py), or a web search
        (websearch.py). It is cancelled if the client leaves."""
        self._to(Event.FANNED_OUT)
        self.task = task

    def begin(self, status: int, content_type: bytes) -> None:
        """The head of a merged response: chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0."""
        self._to(_HEAD)
        self.ttfb = monotonic()
        self.status = status
        self._write(self._own_head(status, content_type))

    def emit(self, data: bytes) -> None:
        self._framed(data)

    def finish(self, status: int, error: str | None) -> None:
        """The merged response is complete."""
        self._to(_COMPLETE)
        self.status = status
        self.error = error
        self._end(None, None, self.keep_alive, replies.LAST_CHUNK if self.raw else b"")

    def reply(self, reply: replies.LocalReply, error: str | None) -> None:
        """A merged response sent whole."""
        self._to(_HEAD)
        self.ttfb = monotonic()
        self._to(_COMPLETE)
        self.status = reply.status
        self.error = error
        keep = self.keep_alive and self.raw and not self.w.draining
        self._end(None, None, keep, replies.render(reply, self.request_id, keep, cors=self.cors))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    return exc.strerror or type(exc).__name__ if isinstance(exc, OSError) else type(exc).__name__
