"""What the client side records of one request while it is parsed (protocol.py fills it in; stage 1 of
docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fortress.pipeline.chain import Admit

# Where a request's reading stands: module constants, read several times per request (a class attribute
# read through its class is not specialised on Python 3.11 and costs several times a module global).
HEAD = 0  # headers still arriving (the only false one: `not req.mode` tests it)
BUFFER = 1  # body collected for inspection (or queued behind another request)
STREAM = 2  # body forwarded upstream as it arrives
DISCARD = 3  # answered locally; remaining body skipped
SENT = 4  # the whole request went to the exchange; nothing more to read for it


class Request:
    """What the parser recorded for one request. The fields a header may set start at their default;
    `method`, `http10` and `keep_alive` are set when the head is complete, `path` and `client_ip` when it
    is decided (protocol.py `_admit`): nothing reads them earlier, so the constructor does not set them."""

    __slots__ = (
        "admit",
        "authorization",
        "backend_hint",
        "body",
        "body_size",
        "chunked",
        "client_ip",
        "complete",
        "connection",
        "content_length",
        "cors",
        "cors_headers",
        "expect",
        "first_bytes",
        "fwd",
        "http10",
        "keep_alive",
        "method",
        "mode",
        "origin",
        "path",
        "request_id",
        "settled",
        "t0",
        "target",
        "x_api_key",
        "xff",
    )
    method: bytes
    http10: bool
    keep_alive: bool
    path: str  # the target's path, no query (read again by the body stage and the exchange)
    client_ip: str  # stage 2's answer
    first_bytes: bytes  # an upload's first bytes (set when it starts: protocol.py `_forward`)

    def __init__(self, t0: float, target: bytes) -> None:
        self.t0 = t0
        self.target = target  # the request target as sent (path and query), whole once the head is
        self.fwd: list[bytes] = []
        self.mode = HEAD
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False
        self.authorization: bytes | None = None
        self.x_api_key: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect = False
        self.connection = False  # a Connection header came (HTTP/1.1 without one keeps the connection)
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.admit: Admit | None = None
        self.backend_hint: bytes | None = None
        self.origin: bytes | None = None  # a browser's Origin (never forwarded: Fortress does CORS)
        self.cors_headers: bytes | None = None  # Access-Control-Request-Headers of a preflight
        self.cors = b""  # the CORS header lines every answer to this request carries
        self.settled = False  # decided on a snapshot known to be current (after a recheck)

    def sniff(self, body: bytes) -> bytes:
        """The first 4 bytes of an upload, even when they arrive in several pieces."""
        self.first_bytes = (self.first_bytes + body)[:4]
        return self.first_bytes
