"""Refuse requests the framework would choke on, before it parses them: a bad Host, control bytes in a path.

Litestar builds the request URL from the Host header and would fail with a 500 on a port such as
99999; a NUL in a static file path reached the filesystem layer and failed there. Both are the
client's mistake: 400 for the Host, 404 for the path (no such file can exist).
"""

from __future__ import annotations

import re

from litestar.types import ASGIApp, Receive, Scope, Send

# host name, IPv4 or bracketed IPv6, then an optional port; the port's range is checked separately
_HOST = re.compile(
    r"^(?:[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::(\d{1,5}))?$"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def problem(scope: Scope) -> tuple[int, str] | None:
    """(status, reason) when the request must be refused, else None (pure)."""
    for name, value in scope["headers"]:
        if name == b"host":
            m = _HOST.match(value.decode("latin-1"))
            if m is None or (m.group(1) is not None and int(m.group(1)) > 65535):
                return 400, "Bad Host header."
    if _CONTROL.search(scope["path"]):
        return 404, "Not found."
    return None


def request_check(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: answer `problem(scope)` in plain text instead of calling the app."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        refused = problem(scope) if scope["type"] == "http" else None
        if refused is None:
            await app(scope, receive, send)
            return
        status, reason = refused
        body = reason.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return middleware
