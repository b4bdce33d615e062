"""The client side of the proxy: an asyncio.Protocol on httptools, one per client connection.

Parser callbacks only record; decisions run once per request when its head is complete (and, for
routes whose JSON must be read, once more when its body is complete). Requests pipelined behind an
active one wait, fully buffered, in a queue while reading is paused, so at most one request per
connection is in flight and responses leave in order. A request may be *parked* (reading paused) while
the worker makes sure of something first: that its snapshot is current before a key is refused, that a
model list is fresh, that an IP trust session is stored; it is then decided again. Stage 1 and the
Downstream of docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING

import httptools

from fortress.http import replies
from fortress.http.spellings import Spellings
from fortress.pipeline.chain import RECHECK, SEARCH, Admit, Forward
from fortress.pipeline.routes import BLOBS, SHOW
from fortress.pipeline.validate import looks_like_zip
from fortress.proxy import fanout, websearch
from fortress.proxy.exchange import Exchange
from fortress.proxy.flow import FlowControl
from fortress.proxy.request import BUFFER, DISCARD, HEAD, SENT, STREAM, Request

if TYPE_CHECKING:
    from fortress.proxy.worker import Worker

log = logging.getLogger("fortress.proxy")

# Client headers never forwarded (credentials, cookies, hop-by-hop, the ones Fortress sets itself), each with
# the Request field on_header reads it into (_DROP: only dropped). One lookup per header decides both.
_DROP = "-"
_NOT_FORWARDED = {
    b"host": _DROP,  # Host comes with every request
    b"authorization": "authorization",
    b"x-api-key": "x_api_key",
    b"cookie": _DROP,
    b"proxy-authorization": _DROP,
    b"connection": "connection",
    b"keep-alive": _DROP,
    b"proxy-connection": "connection",  # llhttp keeps an HTTP/1.0 connection on either (see http10 below)
    b"te": _DROP,
    b"trailer": _DROP,
    b"upgrade": _DROP,
    b"transfer-encoding": "chunked",
    b"content-length": "content_length",
    b"expect": "expect",
    b"x-forwarded-for": "xff",
    b"x-real-ip": _DROP,
    b"forwarded": _DROP,
    b"x-request-id": "request_id",
    b"x-fortress-backend": "backend_hint",
    b"origin": "origin",  # Fortress answers CORS itself; a backend (Ollama) would refuse a foreign Origin
    b"access-control-request-headers": "cors_headers",
}
_FORWARD = "+"
# the same answers by the spellings clients send (X-Stainless-Lang, traceparent... learnt as they come)
_SPELT = Spellings(_NOT_FORWARDED, _FORWARD, (b"content-type", b"user-agent", b"accept", b"accept-encoding"))
# a chunked body's trailer lines, whatever their name: the table on_header reads once a chunked head is done
_TRAILER = "trailer"
_TRAILERS = Spellings({}, _TRAILER)
# self.req until a connection's first target arrives: a head still coming (the bytes read count towards its
# size) that expire() does not answer; nothing writes to it
_NO_REQUEST = Request(0.0, b"")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FORWARDED = b"X-Forwarded-For: %s\r\nX-Real-IP: %s\r\nForwarded: for=%s\r\n"  # for=: RFC 7239 node syntax
_NEVER = float("inf")
_DISCARD_LIMIT = 1 << 20  # an unread body up to this size is skipped to keep the connection


class BadRequest(Exception):
    """Raised inside a parser callback to stop parsing with a ready reply."""

    def __init__(self, reply: replies.LocalReply) -> None:
        self.reply = reply


class ClientProtocol(asyncio.Protocol):
    """One client connection; the Downstream of its exchange (exchange.py) and a Connection of its
    worker (worker.py)."""

    write: Callable[[bytes], None]  # the transport's own write: the relay's bytes take no detour

    def __init__(self, worker: Worker) -> None:
        self.w = worker
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.req = _NO_REQUEST  # the request being read (the parser's callbacks need no check for None)
        self.ex: Exchange | None = None
        self.parked: Request | None = None  # waiting for the worker before it is decided (again)
        self.queue: deque[Request] = deque()
        self.closed = False
        self.last = False  # a request that closes the connection was read whole: read nothing more
        self.head_bytes = 0
        self.head_size = 0  # URL and header lines of the current request, as parsed (0: none yet)
        self.names = _SPELT  # what on_header makes of a header name (_TRAILERS: after a chunked head)
        self.due = 0.0  # monotonic time after which the sweeper closes this connection (0: none)
        # a request's client without X-Forwarded-For is the connection's: its address and the lines that
        # tell the backend (X-Forwarded-For, X-Real-IP, Forwarded) are worked out once per connection
        self.client = ""
        self.forwarded_lines = b""
        self.cfg = worker.cfg
        self.max_head = worker.cfg.max_header_bytes
        # the lower of the two body limits: a body within it needs no look at its route (_body_limit)
        self.body_floor = min(worker.cfg.max_body_bytes, worker.cfg.max_blob_bytes)

    # -- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport)  # type: ignore[arg-type]
        # the exchange's writes: out at the turn's end
        self.write = partial(self.w.outbox.write, transport)  # type: ignore[arg-type]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if not self.w.connection_opened(self):
            transport.close()
            return
        self.client = self.w.client_ip(self.peer, None)
        ip = self.client.encode()
        self.forwarded_lines = _forwarded(ip, ip)
        self.due = monotonic() + self.cfg.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.w.connection_closed(self)
        ex = self.ex
        if ex is not None:
            self.ex = None
            ex.client_lost()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.w.outbox.flush()  # what this connection was sent goes before its close
            self.transport.close()

    def abort(self) -> None:
        ex, self.ex = self.ex, None
        if ex is not None:
            ex.client_lost()
        self.close()

    def busy(self) -> bool:
        return self.ex is not None or self.parked is not None or bool(self.queue)

    # -- deadlines (the worker's sweeper asks) ----------------------------------------------------
    def deadline(self, now: float) -> float:
        """The header, body or keep-alive deadline, or the exchange's (a silent backend)."""
        ex = self.ex
        if ex is None:
            return self.due or _NEVER
        due = self.due  # a request body still streaming up: stalled clients go, paused reads are ours
        if due and self.flow is not None and self.flow.read_paused:
            due = self.due = now + self.cfg.body_timeout_s
        return min(due or _NEVER, ex.deadline(now))

    def expire(self, now: float) -> None:
        ex = self.ex
        if ex is not None and not (self.due and self.due < now):
            ex.expire(now)  # the backend is late, not the client
            return
        req = self.req
        if req is not _NO_REQUEST and req.mode in (HEAD, BUFFER) and ex is None:
            self._write(replies.render(replies.error_reply(408, "request timeout"), self.w.next_id(), False))
        self.close()

    # -- Downstream: what the exchange asks of the client side --------------------------------------
    def pause(self) -> None:
        if self.flow is not None:
            self.flow.pause_reading()

    def resume(self) -> None:
        if self.flow is not None and not self.closed:
            self.flow.resume_reading()

    def done(self, keep_alive: bool) -> None:
        """The exchange's response is complete (or failed)."""
        self.ex = None
        if not keep_alive or self.w.draining:
            self.close()
            return
        self._idle()

    # -- backpressure: a client that cannot keep up pauses the backend's reading -------------------
    def pause_writing(self) -> None:
        if self.flow is not None:
            self.flow.write_paused = True
        if self.ex is not None:
            self.ex.client_blocked(True)

    def resume_writing(self) -> None:
        if self.flow is not None:
            self.flow.write_paused = False
        if self.ex is not None:
            self.ex.client_blocked(False)

    # -- bytes in ----------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.last:
            return  # after a request with Connection: close (or HTTP/1.0) nothing more is served
        if not self.req.mode:  # HEAD
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except BadRequest as bad:  # (its own name: compiled, a name has one type)
            self._reject(bad.reply)
            return
        except httptools.HttpParserUpgrade:
            self._reject(replies.error_reply(400, "protocol upgrades are not supported", close=True))
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if self.last and not isinstance(exc, httptools.HttpParserCallbackError):
                return  # bytes after the last request (RFC 9112 §9.6): ignored, that request is served
            if isinstance(cause, BadRequest):
                self._reject(cause.reply)
            elif isinstance(exc, httptools.HttpParserCallbackError) and cause is not None:
                log.error("internal error while handling a request", exc_info=cause)
                self._reject(replies.error_reply(500, "internal error in the gateway", close=True))
            else:
                self._reject(
                    replies.error_reply(400, f"malformed HTTP request: {_parser_reason(exc)}", close=True)
                )
            return
        if not self.req.mode and (self.head_bytes > self.max_head or self.head_size > self.max_head):
            self._reject(_head_too_large())  # read whole (raw bytes) or parsed so far (a head in one read)

    def _reject(self, reply: replies.LocalReply) -> None:
        if not self.closed:
            self._write(replies.render(reply, self.w.next_id(), False))
            self.close()

    # -- httptools callbacks ------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        """The target's first piece starts a request: httptools' on_message_begin would cost one callback
        more per request (head_size is 0 from the end of a message to the next target)."""
        if self.head_size:
            self.req.target += url
            self.head_size += len(url)
            return
        now = monotonic()
        self.req = Request(now, url)
        self.head_size = len(url)
        if self.ex is None and not self.queue:
            self.due = now + self.cfg.header_timeout_s

    def on_header(self, name: bytes, value: bytes) -> None:
        """Record or forward one header line. Its size (`name: value\\r\\n`, a forwarded line's own length)
        counts towards the head's, checked once the head is complete (on_headers_complete) or the read is
        parsed (data_received), not per line."""
        field = self.names[name]
        if field is _FORWARD:
            line = name + b": " + value + b"\r\n"
            self.head_size += len(line)
            self.req.fwd.append(line)
            return
        self.head_size += len(name) + len(value) + 4
        if field is _DROP:
            return
        req = self.req
        if field == "authorization":
            req.authorization = value
        elif field == "content_length":
            if req.content_length is not None or not value.isdigit():
                raise BadRequest(replies.error_reply(400, "invalid or repeated Content-Length", close=True))
            req.content_length = int(value)
        elif field == "chunked":
            if value.strip().lower() != b"chunked" or req.chunked:
                raise BadRequest(replies.error_reply(400, "unsupported Transfer-Encoding", close=True))
            req.chunked = True
        elif field == "xff":
            req.xff = value if req.xff is None else req.xff + b", " + value
        elif field == "expect":
            req.expect = value.lower() == b"100-continue"
        elif field == "connection":
            req.connection = True
        elif field is _TRAILER:
            self._trailer()
        else:  # the last one of these counts
            setattr(req, field, value)

    def _trailer(self) -> None:
        """A trailer line comes after the request was decided on its head: no backend gets it, and no head
        check follows it, so its size is checked here."""
        if self.head_size > self.max_head:
            raise BadRequest(_head_too_large())

    def on_headers_complete(self) -> None:
        if self.head_size > self.max_head:
            raise BadRequest(_head_too_large())
        req = self.req
        parser = self.parser
        if req.chunked:
            if req.content_length is not None:
                raise BadRequest(
                    replies.error_reply(400, "both Content-Length and Transfer-Encoding", close=True)
                )
            self.names = _TRAILERS  # any header line after the body is a trailer
        req.method = parser.get_method()
        keep = req.keep_alive = parser.should_keep_alive()
        # kept alive without a Connection (or Proxy-Connection) header is HTTP/1.1 (1.0 needs "keep-alive"
        # in one of them): the version, a string httptools formats on each call, is asked for only otherwise
        req.http10 = (req.connection or not keep) and parser.get_http_version() == "1.0"
        self.head_bytes = 0
        if self.ex is not None or self.queue or self.parked is not None:
            req.mode = BUFFER  # pipelined: wait for the request ahead
            self.queue.append(req)
            self.pause()
            return
        self._admit(req)

    def on_body(self, body: bytes) -> None:
        req = self.req
        mode = req.mode
        if mode == BUFFER:  # (first: the inspected routes, the most used, are read whole)
            req.body_size += len(body)
            if req.body_size > self.cfg.max_body_bytes:
                raise BadRequest(replies.error_reply(413, "request body too large", close=True))
            req.body.append(body)
        elif mode == STREAM:
            ex = self.ex
            if ex is not None:
                req.body_size += len(body)
                if req.body_size > self.body_floor and req.body_size > self._body_limit(ex.admit):
                    raise BadRequest(replies.error_reply(413, "request body too large", close=True))
                self.due = monotonic() + self.cfg.body_timeout_s
                if ex.route.model_admin and len(req.first_bytes) < 4:
                    if looks_like_zip(req.sniff(body)):
                        raise BadRequest(
                            replies.error_reply(400, "zip archives are not accepted as blobs", close=True)
                        )
                    req.body.append(body)
                    if len(req.first_bytes) == 4:
                        self._begin_upload(req, ex)
                    return
                ex.send_body(body)
        elif mode == DISCARD:
            req.body_size += len(body)
            if req.body_size > _DISCARD_LIMIT:
                raise BadRequest(replies.error_reply(413, "request body too large", close=True))

    def on_message_complete(self) -> None:
        self.head_size = 0  # (not before: a chunked body's trailers are header lines too)
        self.names = _SPELT
        req = self.req
        req.complete = True
        if not req.keep_alive:
            self.last = True
        if req is self.parked:
            return  # decided once the worker calls back
        mode = req.mode
        if mode == BUFFER:
            if req.admit is not None:
                self._forward(req)
            elif self.ex is None and self.parked is None and self.queue and self.queue[0] is req:
                self._idle()  # a pipelined request completed after the one ahead finished
        elif mode == STREAM:
            ex = self.ex
            if ex is not None:
                self.due = 0.0
                if ex.route.model_admin and len(req.first_bytes) < 4:
                    self._begin_upload(req, ex)  # a body of fewer than 4 bytes
                if self.ex is ex:
                    ex.end_body()
        elif mode == DISCARD and self.ex is None and self.parked is None and not self.queue:
            self._idle()

    # -- decisions -----------------------------------------------------------------------------------
    def _admit(self, req: Request) -> None:
        w = self.w
        path, _, query = req.target.decode("latin-1").partition("?")
        req.path = path
        if req.request_id is None or not _valid_request_id(req.request_id):
            req.request_id = w.next_id()
        xff = req.xff
        client_ip = req.client_ip = self.client if xff is None else w.client_ip(self.peer, xff)
        gate = w.gate
        if req.origin is not None:
            req.cors = gate.c.cors.allow(req.origin)
        if req.method == b"OPTIONS":
            self._local(req, gate.preflight(path, req.origin, req.cors_headers, client_ip), path, client_ip)
            return
        result = gate.head(
            req.method,
            path,
            query,
            req.authorization,
            req.x_api_key,
            client_ip,
            time.time(),
            req.settled,
        )
        if not isinstance(result, Admit):  # (one test on the common path, not two)
            if result is RECHECK:
                self._recheck(req, self._admit)
            else:
                self._local(req, result, path, client_ip)  # type: ignore[arg-type]
            return
        req.admit = result
        route = result.route
        if route.federated:
            reply = w.answer(
                result, path, req.method, client_ip, lambda r: self._answered(req, r, path, client_ip)
            )
            if reply is None:
                self._park(req, DISCARD)
            else:
                self._local(req, reply, path, client_ip)
            return
        size = req.content_length
        if size is not None and size > self.body_floor and size > self._body_limit(result):
            self._local(
                req,
                replies.error_reply(413, "request body too large", route.shape, close=True),
                path,
                client_ip,
            )
            return
        if route.inspect:
            req.mode = BUFFER
            self.due = monotonic() + self.cfg.body_timeout_s
            if req.expect and not req.complete:
                self._write(_CONTINUE)
            if req.complete:
                self._forward(req)
            return
        has_body = req.chunked or bool(size)
        if req.expect and has_body and not req.complete:
            self._write(_CONTINUE)
        body = b"".join(req.body) if (req.complete or not has_body) else None
        streaming = body is None
        held: list[bytes] = []
        if streaming and req.body:  # pieces read while the request was parked
            held, req.body, req.body_size = req.body, [], 0
        self._forward(req, body, streaming)
        for piece in held:
            try:
                self.on_body(piece)
            except BadRequest as exc:
                self._reject(exc.reply)
                return

    # -- parking: the worker makes sure of something before the request is decided --------------------
    def _park(self, req: Request, mode: int) -> None:
        """Wait for the worker with reading paused; the client is not the slow side, so no deadline runs
        (the worker's waits are bounded: a check, a list refresh, a database write)."""
        self.parked = req
        req.mode = mode  # BUFFER: its body is kept for the decision; DISCARD: it is not needed
        self.due = 0.0
        self.pause()

    def _unpark(self, req: Request) -> bool:
        """Back from the worker: False when the connection is gone meanwhile (nothing left to do)."""
        if self.closed or self.parked is not req:
            return False
        self.parked = None
        if not req.complete:
            self.due = monotonic() + self.cfg.body_timeout_s  # the rest of its body must come
        if not self.queue:
            self.resume()  # read on, as any request in flight does (a client closing must be seen)
        return True

    def _recheck(self, req: Request, decide: Callable[[Request], None]) -> None:
        """A key would be refused: decide again on a snapshot known to be current (freshness.py)."""
        req.settled = True

        def again() -> None:
            if self._unpark(req):
                decide(req)

        if self.w.recheck(again):
            self._park(req, BUFFER)
        else:
            decide(req)  # no checks to wait for (a worker without a database): decide now

    def _answered(self, req: Request, reply: replies.LocalReply, path: str, client_ip: str) -> None:
        if self._unpark(req):
            self._local(req, reply, path, client_ip)

    def _body_limit(self, admit: Admit) -> int:
        """Model files go to /api/blobs and stream through; every other body is held and capped lower."""
        cfg = self.cfg
        return cfg.max_blob_bytes if admit.route is BLOBS else cfg.max_body_bytes

    def _forward(self, req: Request, body: bytes | None = None, streaming: bool = False) -> None:
        """Send a decided request on. An inspected one's whole body is here: the body stage runs first (and
        may answer); any other comes with its body, or None when the body streams after its head."""
        admit = req.admit
        assert admit is not None and req.request_id is not None
        route = admit.route
        doc = None
        if route.inspect:
            raw = b"".join(req.body)
            gate = self.w.gate
            if admit.key_in_body:  # no key in the head: the body's api_key (or the address's trust)
                found = gate.body_key(admit, raw, req.client_ip, time.time(), req.settled)
                if found is RECHECK:
                    self._recheck(req, self._forward)
                    return
                if isinstance(found, replies.LocalReply):
                    self._local(req, found, req.path, req.client_ip)
                    return
            outcome = gate.body(admit, raw)
            if not isinstance(outcome, Forward):
                self._local(req, outcome, req.path, req.client_ip)
                return
            if route is SHOW and outcome.model:
                shown = self.w.provider_show(outcome.model)
                if shown is not None:
                    self._local(req, shown, req.path, req.client_ip)
                    return
            body, doc = outcome.body, outcome.doc
        req.mode = STREAM if streaming else SENT
        w = self.w
        client_ip = req.client_ip
        # the address Fortress trusts, in the three headers backends read it from (never the client's own);
        # without X-Forwarded-For, the connection's (connection_made)
        xff = req.xff
        if xff is None:
            req.fwd.append(self.forwarded_lines)
        else:
            ip = client_ip.encode()
            req.fwd.append(_forwarded(ip, xff + b", " + self.peer.encode() if w.trusts(self.peer) else ip))
        if streaming and not req.chunked and req.content_length is not None:
            # the body follows as it arrives: without its length the backend would read it as requests
            req.fwd.append(b"Content-Length: %d\r\n" % req.content_length)
        # a streamed body must keep arriving: each piece moves the deadline (see on_body)
        self.due = monotonic() + self.cfg.body_timeout_s if streaming else 0.0
        ex = Exchange(
            w,
            self,
            admit,
            req.method,
            req.path,
            w.strip_query_key(req.target),
            req.fwd,
            req.request_id,
            req.http10,
            req.keep_alive,
            body,
            streaming,
            req.chunked,
            req.t0,
            client_ip,
            req.cors,
            doc,
        )
        hint = req.backend_hint
        if hint is not None and admit.key is not None and admit.key.scope == "admin":
            ex.backend_hint = hint.decode("latin-1")
        self.ex = ex
        if streaming and route.model_admin:
            req.first_bytes = b""  # uploads start once their first bytes are known not to be a zip
        else:
            self._begin(ex)

    def _begin(self, ex: Exchange) -> None:
        if ex.route.kind is SEARCH:
            websearch.start(ex)
        elif ex.backend_hint == fanout.ALL:
            fanout.start(ex)
        else:
            ex.start()

    def _begin_upload(self, req: Request, ex: Exchange) -> None:
        """The upload's first bytes passed the zip sniff: now pick a backend and send what was held."""
        held, req.body = req.body, []
        self._begin(ex)
        if self.ex is ex:  # not failed at once (no backend)
            for piece in held:
                ex.send_body(piece)

    def _local(self, req: Request, reply: replies.LocalReply, path: str, client_ip: str) -> None:
        """Fortress answers itself; the request goes no further."""
        rid = req.request_id or self.w.next_id()
        admit = req.admit
        if admit is not None:
            self.w.gate.finish(admit, 0, time.time())
        keep = req.keep_alive and not reply.close and not self.w.draining
        if not req.complete and (req.chunked or (req.content_length or 0) > _DISCARD_LIMIT):
            keep = False  # a body too long (or of unknown length) to skip: close instead
        extra = admit.rate_headers if admit is not None and reply.status != 429 else ()
        self.w.account_local(req, reply.status, path, client_ip, reply)  # before the answer (exchange.py)
        self._write(replies.render(reply, rid, keep, extra, req.method == b"HEAD", req.cors))
        if not keep:
            self.close()
            return
        req.mode = DISCARD
        if req.complete:
            self._idle()

    def _idle(self) -> None:
        """Ready for the next request: take a queued one, or wait with the keep-alive timer."""
        if self.closed:
            return
        if self.queue:
            req = self.queue[0]
            if req.complete:
                self.queue.popleft()
                self._admit(req)
                return
        self.due = monotonic() + self.cfg.idle_timeout_s
        flow = self.flow  # resume() less its check of closed (made above) and a call when not paused
        if flow is not None and flow.read_paused:
            flow.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.write(data)


def _forwarded(ip: bytes, xff: bytes) -> bytes:
    return _FORWARDED % (xff, ip, b'"[%s]"' % ip if b":" in ip else ip)


def _head_too_large() -> replies.LocalReply:
    return replies.error_reply(431, "request header fields too large", close=True)


def _valid_request_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and value.replace(b"-", b"").replace(b"_", b"").replace(b".", b"").isalnum()


def _parser_reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:120]
