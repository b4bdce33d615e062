"""The backend side of a relay: one keep-alive connection to one backend, one response at a time.

The response head is parsed (httptools) before the exchange sees it. In raw mode (the fast path) the
body goes to the client exactly as it arrived, chunk framing included, after the parser has checked
it: the parser only tracks where the response ends and keeps its last pieces for accounting. In
decoded mode (HTTP/1.0 clients, response codecs) the exchange gets the body with the framing removed.
Either way nothing beyond the response's own end reaches the client: a body longer than its declared
Content-Length is cut at that length and the connection is not reused (docs/architecture.md,
"Framing guarantees"). The bytes of the read that completes a response are not relayed as they come:
they go with `complete()`, and the exchange sends them once the response's usage row is recorded.

The head's lines that the client gets are picked as the parser reports them (one Python call per header,
no second walk): hop-by-hop lines and the backend's own CORS grant stay behind (Fortress decides CORS:
[security] cors_origins), Transfer-Encoding too unless the body is relayed in the backend's framing.
"""

from __future__ import annotations

import asyncio
from collections import deque
from time import monotonic
from typing import Protocol

import httptools

from fortress.http.spellings import Spellings
from fortress.proxy.flow import FlowControl
from fortress.proxy.outbox import Outbox

MAX_RESPONSE_HEAD = 64 * 1024
_HEAD_END = b"\r\n\r\n"
_HOP = (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade")
_CORS = (
    b"allow-origin",
    b"allow-credentials",
    b"allow-headers",
    b"allow-methods",
    b"expose-headers",
    b"max-age",
)
# What on_header does with a response header: pass it on as it came (0, false), leave it behind, or note it
# (the body's framing, the Date) and pass it on
_PASS, _DROP, _LENGTH, _DATE, _CODING = range(5)
_KINDS = {
    b"content-length": _LENGTH,
    b"transfer-encoding": _CODING,
    b"date": _DATE,
    **dict.fromkeys((*_HOP, *(b"access-control-" + n for n in _CORS)), _DROP),
}
# a header's kind by its name as the backend spelt it (fortress.http.spellings)
_USUAL = (b"server", b"content-type", b"content-encoding", b"cache-control", b"vary")
_SPELT = Spellings(_KINDS, _PASS, _USUAL)


def chunked_coding(value: bytes) -> bool:
    """Whether llhttp reads a body as chunked after this Transfer-Encoding value (the last such line
    decides): its last coding is the token `chunked`, spaces after it allowed, a tab not. Otherwise a
    response with Transfer-Encoding lasts until the connection closes."""
    return value.rpartition(b",")[2].lstrip(b" \t").rstrip(b" ").lower() == b"chunked"


class Receiver(Protocol):
    """What a connection reports to the exchange it serves (exchange.py)."""

    def head(self, up: UpstreamProtocol, body: bytes) -> bool:
        """The response head is parsed; `body`: the raw body bytes that came with it (raw mode).
        False: the exchange dropped this response (it retries elsewhere)."""

    def relay(self, data: bytes) -> None:
        """Raw mode: body bytes as received, framing included, already checked by the parser."""

    def decoded(self, data: bytes) -> None:
        """Decoded mode: body bytes with the framing removed."""

    def complete(self, up: UpstreamProtocol, last: bytes) -> None:
        """The response is fully framed; `last`: its last bytes (raw or decoded, as the mode's), which
        the exchange sends only once the usage row is recorded."""

    def broken(self, message: str) -> None:
        """The connection failed or broke the protocol before the response was complete."""

    def backend_blocked(self, blocked: bool) -> None:
        """The backend stopped (True) or resumed (False) taking the request body we send it."""


class UpstreamProtocol(asyncio.Protocol):
    __slots__ = (
        "backend",
        "buf",
        "chunked",
        "closed",
        "dated",
        "decoded",
        "done",
        "ex",
        "flow",
        "framed",
        "head_only",
        "heard",
        "idle_since",
        "in_chunk",
        "keep_alive",
        "left",
        "lines",
        "out",
        "parser",
        "parsers",
        "pieces",
        "sent_at",
        "stalled_since",
        "status",
        "tail",
        "transport",
    )

    def __init__(self, backend: str, out: Outbox) -> None:
        self.backend = backend
        self.out = out  # the worker's: every write of the turn goes out at its end
        self.transport: asyncio.Transport | None = None
        self.flow: FlowControl | None = None
        self.ex: Receiver | None = None
        self.closed = False
        self.pieces: list[bytes] = []  # decoded mode: the body pieces of the read being parsed
        self.tail: deque[bytes] = deque(maxlen=3)  # the response's last pieces: its usage is read there
        self.parsers: list[httptools.HttpResponseParser | None] = [None, None]  # raw mode, decoded mode
        self.decoded = False  # the mode of the last request sent (its parser is `parser`)
        self.head_only = False  # the last request sent was a HEAD
        self.parser = self.parsers[False] = httptools.HttpResponseParser(_Callbacks(self, False))
        self.heard = False  # set per read; deadline() takes it back to find stalled streams
        self.sent_at = 0.0
        self.stalled_since = 0.0
        self.idle_since = 0.0  # stamped by the pool when the connection goes idle
        self.buf = b""  # a head's bytes so far (empty again once the head is parsed)
        self.framed = False  # the body's end is known without a close: chunked, a length, or no body
        self.keep_alive = True  # False also when the backend sent more than it declared: never reuse
        self.in_chunk = False  # inside a chunk's data: framing written so far ends mid-chunk
        self._reset()

    def _reset(self) -> None:
        """Before a response head. `buf`, `pieces` and `in_chunk` are empty or False again after every
        response a connection survives (llhttp ends the last chunk too); `status`, `keep_alive` and
        `framed` are set by every head (on_headers_complete). `status` stays 0 until a head is parsed, so
        it also says whether the head has gone to the exchange (all of _head runs in one call)."""
        self.lines: list[bytes] = []  # the head's lines the client gets, rendered: "Name", ": ", value, CRLF
        self.dated = False  # the head has a Date line
        self.status = 0  # still 0 after a feed: the head did not parse as HTTP
        self.done = False
        self.chunked = False  # Transfer-Encoding: chunked (known from the head)
        self.left = -1  # body bytes still due under Content-Length; -1: not length-delimited
        self.tail.clear()

    # -- pool predicates -------------------------------------------------------------------------
    @property
    def reusable(self) -> bool:
        """Idle and fit for another request: not serving anyone and open (the pool holds connected ones
        only; a response not fully framed, or longer than declared, closed its connection in _finish)."""
        return self.ex is None and not self.closed

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The head's end-to-end headers as (name, value) pairs, for a response codec."""
        lines = self.lines
        return list(zip(lines[::4], lines[2::4], strict=True))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- driving ---------------------------------------------------------------------------------
    def send(self, ex: Receiver, data: bytes, decoded: bool, head_only: bool) -> None:
        """Start a request/response on this connection; `head_only`: a HEAD request (no body follows)."""
        self.ex = ex
        self.sent_at = monotonic()
        if decoded != self.decoded or self.head_only:
            self._mode(decoded)
        self.head_only = head_only
        self._reset()
        self.out.write(self.transport, data)  # type: ignore[arg-type]  # write() inlined

    def _mode(self, decoded: bool) -> None:
        """Parse the next response with this mode's parser: made on first use, and made again after a HEAD
        response (which leaves its parser expecting a body)."""
        parsers = self.parsers
        if self.head_only:
            parsers[self.decoded] = None
        parser = parsers[decoded]
        if parser is None:
            parser = parsers[decoded] = httptools.HttpResponseParser(_Callbacks(self, decoded))
        self.parser = parser
        self.decoded = decoded

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.out.write(self.transport, data)

    def deadline(self, now: float, first_byte_s: float, idle_s: float) -> float:
        """When the backend counts as silent: no response head in time, or no data for too long."""
        if not self.status:
            return self.sent_at + first_byte_s
        if self.heard:
            self.heard = False
            self.stalled_since = now
        return self.stalled_since + idle_s

    # -- asyncio callbacks -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.flow = FlowControl(transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        self.heard = True
        if ex is None:  # bytes nobody asked for: this connection cannot be trusted any more
            self.close()
            return
        if not self.status:
            self._head(ex, data)
            return
        left = self.left
        if left >= 0:  # Content-Length: never a byte more than declared
            if len(data) > left:
                data = data[:left]
                self.keep_alive = False  # overrun: cut at the declared length, never reused
            self.left = left - len(data)
        if not self._parse(ex, data):
            return
        if self.done:
            self._finish(ex, data)
        elif not self.decoded:
            ex.relay(data)  # checked by the parser first, then out unchanged

    def _head(self, ex: Receiver, data: bytes) -> None:
        """Bytes before the response head is complete: parse the head alone, then what follows it."""
        if self.buf:
            data = self.buf + data
            self.buf = b""
        end = data.find(_HEAD_END) + 4
        if end < 4:
            if len(data) > MAX_RESPONSE_HEAD:
                self._broken(ex, "backend response head too large")
            else:
                self.buf = data
            return
        try:
            self.parser.feed_data(data[:end])  # type: ignore[union-attr]
        except httptools.HttpParserError:
            self._broken(ex, "backend sent a malformed response")
            return
        if not self.status:  # a head the parser did not finish: not HTTP as we know it
            self._broken(ex, "backend sent a malformed response")
            return
        rest = data[end:]
        if self.status < 200:  # an interim response (100 Continue): the real head follows
            self._reset()
            if rest:
                self._head(ex, rest)
            return
        left = self.left
        if self.done:  # no body (HEAD, 204, 304): anything more is surplus
            if rest:
                self.keep_alive = False
                rest = b""
        elif left >= 0:
            if len(rest) > left:
                rest = rest[:left]
                self.keep_alive = False
            self.left = left - len(rest)
        if self.decoded:  # the head first, then the body decoded straight into the exchange
            if not ex.head(self, b""):
                return
            if not self._parse(ex, rest):
                return
        else:  # the body bytes checked first, then out with the head in one write
            if not self._parse(ex, rest) or not ex.head(self, rest):
                return  # broken, or the exchange chose to retry elsewhere (and let go of this connection)
        if self.done:
            self._finish(ex, b"")

    def _parse(self, ex: Receiver, data: bytes) -> bool:
        """Feed body bytes to the parser; False (and the exchange told) when they break the protocol.

        In decoded mode the body pieces of one read (a fast backend's read holds many chunks) reach the
        exchange joined, once: a codec then handles a batch of events per call, not one call per event.
        """
        in_chunk = self.in_chunk
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserError:
            self.in_chunk = in_chunk  # nothing of this read went out: the framing is where it was
            if self.pieces:
                ex.decoded(self._take())
            self._broken(ex, "backend sent a malformed response")
            return False
        if self.pieces and not self.done:  # the last pieces go with complete()
            ex.decoded(self._take())
        return True

    def _take(self) -> bytes:
        """Decoded mode: the body pieces parsed so far, joined (b"" for none)."""
        pieces = self.pieces
        if not pieces:
            return b""
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self.tail.extend(pieces)
        pieces.clear()
        return data

    def _finish(self, ex: Receiver, data: bytes) -> None:
        """The response is complete; `data`: raw mode's last read, not relayed yet (b"": all was)."""
        if not self.keep_alive:
            self.close()
        ex.complete(self, self._take() if self.decoded else data)

    def _broken(self, ex: Receiver, message: str) -> None:
        self.close()
        ex.broken(message)

    def eof_received(self) -> bool | None:
        """A body without length or chunks ends with the connection (an HTTP/1.0-style backend)."""
        ex = self.ex
        if ex is not None and self.status and not self.framed and not self.done:
            self.done = True
            self.keep_alive = False
            self._finish(ex, b"")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.ex
        if ex is not None and not self.done:
            ex.broken(f"backend {self.backend} closed the connection")

    def pause_writing(self) -> None:
        if self.ex is not None:
            self.ex.backend_blocked(True)

    def resume_writing(self) -> None:
        if self.ex is not None:
            self.ex.backend_blocked(False)

    # -- httptools callbacks: record only ---------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.done:  # a second response to one request: the backend broke the protocol
            raise ValueError("unsolicited response")

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _SPELT[name]
        if kind:
            if kind == _DROP:
                return  # hop-by-hop, or the backend's CORS grant
            if kind == _LENGTH:
                self.left = int(value)  # the parser has vetted it (digits, no conflicting repeat)
            elif kind == _DATE:
                self.dated = True
            else:
                self.chunked = chunked_coding(value)
                if self.decoded:
                    return  # Fortress frames the body itself, or sends it close-delimited
        self.lines += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        status = self.status = self.parser.get_status_code()  # type: ignore[union-attr]
        self.keep_alive = self.parser.should_keep_alive()  # type: ignore[union-attr]
        if self.head_only or status in (204, 304):
            self.done = self.framed = True
            self.left = -1
        elif self.chunked:
            self.left = -1  # chunked framing wins over a Content-Length (and the parser enforces it)
            self.framed = True
        else:
            self.framed = self.left >= 0

    def on_chunk_header(self) -> None:
        self.in_chunk = True

    def on_chunk_complete(self) -> None:
        self.in_chunk = False

    def on_message_complete(self) -> None:
        self.done = True


class _Callbacks:
    """The parser callbacks of one mode: the connection's own, except that body pieces go straight into a
    container (a C call, no Python frame per piece). Raw mode keeps the last three in `tail`, where the
    usage of a relayed answer is read from; decoded mode collects the read's pieces (handed over once it is
    parsed, see _parse) and does not track chunk boundaries (Fortress frames what it sends itself).
    httptools binds the callbacks an object has when the parser is made (an unset slot: none)."""

    __slots__ = (
        "on_body",
        "on_chunk_complete",
        "on_chunk_header",
        "on_header",
        "on_headers_complete",
        "on_message_begin",
        "on_message_complete",
    )

    def __init__(self, up: UpstreamProtocol, decoded: bool) -> None:
        self.on_message_begin = up.on_message_begin
        self.on_header = up.on_header
        self.on_headers_complete = up.on_headers_complete
        self.on_message_complete = up.on_message_complete
        if decoded:
            self.on_body = up.pieces.append
        else:
            self.on_body = up.tail.append
            self.on_chunk_header = up.on_chunk_header
            self.on_chunk_complete = up.on_chunk_complete
