"""What the client side records of one request while it is parsed (protocol.py fills it in; stage 1 of
docs/architecture.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fortress.pipeline.chain import Admit


class Mode:
    """Where a request's reading stands: plain ints, read several times per request (an Enum member read
    through its class costs four times a plain attribute on Python 3.11)."""

    HEAD = 0  # headers still arriving
    BUFFER = 1  # body collected for inspection (or queued behind another request)
    STREAM = 2  # body forwarded upstream as it arrives
    DISCARD = 3  # answered locally; remaining body skipped
    SENT = 4  # the whole request went to the exchange; nothing more to read for it


class Request:
    """What the parser recorded for one request."""

    __slots__ = (
        "admit",
        "authorization",
        "backend_hint",
        "body",
        "body_size",
        "chunked",
        "client_ip",
        "complete",
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
        "url",
        "x_api_key",
        "xff",
    )

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.url: list[bytes] = []
        self.fwd: list[bytes] = []
        self.mode = Mode.HEAD
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False
        self.authorization: bytes | None = None
        self.x_api_key: bytes | None = None
        self.content_length: int | None = None
        self.chunked = False
        self.expect = False
        self.xff: bytes | None = None
        self.request_id: bytes | None = None
        self.admit: Admit | None = None
        self.backend_hint: bytes | None = None
        self.first_bytes = b""
        self.method = b""
        self.http10 = False
        self.keep_alive = True
        self.origin: bytes | None = None  # a browser's Origin (never forwarded: Fortress does CORS)
        self.cors_headers: bytes | None = None  # Access-Control-Request-Headers of a preflight
        self.cors = b""  # the CORS header lines every answer to this request carries
        self.settled = False  # decided on a snapshot known to be current (after a recheck)
        # worked out once from the head (protocol.py _admit), read again by the body stage and the exchange
        self.target = b""  # the request target as sent (path and query)
        self.path = ""  # its path, no query
        self.client_ip = ""  # stage 2's answer

    def sniff(self, body: bytes) -> bytes:
        """The first 4 bytes of an upload, even when they arrive in several pieces."""
        self.first_bytes = (self.first_bytes + body)[:4]
        return self.first_bytes
