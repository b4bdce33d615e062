"""CORS for browser clients (DESIGN §6.1, `[security] cors_origins`): exact origins, or "*".

Compiled once per snapshot into header bytes, so an answer costs one dict lookup on the request's
`Origin`, and nothing at all for requests without one. For an allowed origin a preflight `OPTIONS` is
answered 204 without a key (the route's methods, `Authorization`, `Content-Type`, `X-API-Key` and
whatever else the page asked to send, a max-age), and every answer, local or relayed, errors included,
carries `Access-Control-Allow-Origin` with `Vary: Origin` and the headers a page may read. A foreign
origin gets no CORS header at all, so the browser refuses the answer to the page.
Credentials mode is not offered: keys travel in headers, which need no cookies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fortress.http.replies import LocalReply

MAX_AGE_S = 600
ALLOWED_HEADERS = b"Authorization, Content-Type, X-API-Key"
EXPOSED_HEADERS = (
    b"X-Request-ID, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, "
    b"Retry-After-Ms, X-Fortress-Model"
)
_EXPOSE = b"Access-Control-Expose-Headers: " + EXPOSED_HEADERS + b"\r\n"
# a comma-separated list of header names (RFC 9110 tokens), as Access-Control-Request-Headers carries
_TOKEN_LIST = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")
_ORIGIN = re.compile(r"(?:https?|chrome-extension|moz-extension|safari-web-extension)://[^/\s]+")


def check_origin(origin: str) -> str | None:
    """A problem with one configured origin, or None: "*", or scheme://host[:port] with no path."""
    if origin == "*" or _ORIGIN.fullmatch(origin):
        return None
    return f'{origin!r} is not an origin (scheme://host[:port], no path or trailing slash) nor "*"'


class Cors:
    """The compiled `cors_origins`: header bytes per allowed origin."""

    __slots__ = ("_any", "_exact", "enabled")

    def __init__(self, origins: Iterable[str]) -> None:
        listed = tuple(origins)
        self.enabled = bool(listed)
        self._any = b"Access-Control-Allow-Origin: *\r\n" + _EXPOSE if "*" in listed else b""
        self._exact = {
            o.encode(): b"Access-Control-Allow-Origin: %s\r\nVary: Origin\r\n%s" % (o.encode(), _EXPOSE)
            for o in listed
            if o != "*"
        }

    def allow(self, origin: bytes) -> bytes:
        """The header lines every answer to this origin carries; b"" for a foreign origin."""
        return self._exact.get(origin) or self._any

    def preflight(
        self, origin: bytes | None, methods: Iterable[bytes], requested: bytes | None
    ) -> LocalReply:
        """The answer to OPTIONS: 204, with the CORS grant when the origin is allowed."""
        allow = b", ".join(sorted((*methods, b"OPTIONS")))
        headers: tuple[tuple[bytes, bytes], ...] = ((b"Allow", allow),)
        if origin is not None and self.allow(origin):
            names = ALLOWED_HEADERS
            if requested and _TOKEN_LIST.fullmatch(requested.strip()):
                names += b", " + requested.strip()
            headers += (
                (b"Access-Control-Allow-Methods", allow),
                (b"Access-Control-Allow-Headers", names),
                (b"Access-Control-Max-Age", b"%d" % MAX_AGE_S),
            )
        return LocalReply(204, b"", headers=headers)
