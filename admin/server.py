"""Serving the admin: uvicorn's httptools protocol with deadlines for reading requests and a connection cap.

Plain uvicorn keeps a connection that never finishes its request head open forever (its keep-alive
timer only runs between requests) and accepts headers of any size, so a few hundred slowloris
connections exhaust the file descriptors and lock a real browser out. Uvicorn has no head timeout
setting, but it takes a protocol class (`http=`), so this one adds, per connection:
- a head deadline: the request line and headers must arrive within `[admin] head_timeout_s`, counted
  from the connection (or the end of the previous response) and reset by nothing the client sends;
- a body deadline (`[admin] body_timeout_s`) once the head is in, and a cap on the head's size;
- a cap of `[admin] max_connections`: at the cap a new connection evicts the connection that has
  waited longest without sending a complete request head (idle keep-alive or dribbling attacker),
  never one whose request is being served, so a browser keeps getting in during a flood.
The decision of whom to evict is ConnectionGuard's (pure, tested without sockets).
On stop, a connection with nothing left to send is dropped at once: a TLS close waits for the client's
close_notify (asyncio: up to 30 s), which a browser holding an idle connection never sends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fortress.config import AdminConfig

log = logging.getLogger("fortress.admin")
KEEP_ALIVE_S = 5.0  # idle time allowed between requests (the dashboard polls every 2 s)
MAX_HEAD_BYTES = 64 * 1024
FD_RESERVE = 64  # descriptors kept for the database, logs and outgoing calls


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # some sandboxes forbid it; keep what we have
            pass
    return soft


def connection_cap(wanted: int, fd_limit: int) -> int:
    """At most `wanted` connections, and never more than the descriptors left after FD_RESERVE."""
    return max(1, min(wanted, fd_limit - FD_RESERVE))


class ConnectionGuard:
    """Counts open connections and picks whom to close when a new one would exceed `limit` (pure).

    `waiting` holds the connections without a request in progress, oldest first: those are the
    ones a flood is made of, and the only ones it is safe to drop.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._waiting: dict[object, None] = {}
        self._closing: set[object] = set()

    def opened(self, conn: object) -> object | None:
        """Register a new connection; returns the connection to close (maybe `conn` itself), or None."""
        self.open += 1
        victim: object | None = None
        if self.open - len(self._closing) > self.limit:
            victim = next(iter(self._waiting), conn)
            self._waiting.pop(victim, None)
            self._closing.add(victim)
        if victim is not conn:
            self._waiting[conn] = None
        return victim

    def waiting(self, conn: object) -> None:
        """`conn` finished a response and waits for its next request head: it may be evicted."""
        if conn not in self._closing:
            self._waiting.pop(conn, None)
            self._waiting[conn] = None

    def busy(self, conn: object) -> None:
        """`conn` sent a complete head: its request is being served and is never evicted."""
        self._waiting.pop(conn, None)

    def closed(self, conn: object) -> None:
        self.open -= 1
        self._waiting.pop(conn, None)
        self._closing.discard(conn)

    def __repr__(self) -> str:
        return f"<ConnectionGuard open={self.open}/{self.limit} waiting={len(self._waiting)}>"


class Phase(enum.Enum):
    HEAD = "head"  # waiting for (the rest of) a request head
    BODY = "body"  # head in, body still arriving
    SERVING = "serving"  # the app has the whole request; its response is under way


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with the deadlines and the cap described in the module docstring."""

    guard: ConnectionGuard
    head_timeout_s: float
    body_timeout_s: float

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = Phase.HEAD
        self.head_bytes = 0
        self.deadline: asyncio.TimerHandle | None = None
        self.stopping = False

    @classmethod
    def configured(cls, guard: ConnectionGuard, head_timeout_s: float, body_timeout_s: float) -> type[Any]:
        """A subclass bound to one server's guard and timeouts (uvicorn instantiates the class)."""
        bound = {"guard": guard, "head_timeout_s": head_timeout_s, "body_timeout_s": body_timeout_s}
        return type(cls.__name__, (cls,), bound)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        victim = self.guard.opened(self)
        if victim is not None:
            victim.transport.close()  # type: ignore[attr-defined]
            if victim is self:
                return
        self._arm(self.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.phase is Phase.HEAD and not self.transport.is_closing():
            # counted here, not in parser callbacks: httptools holds a header line until it ends
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.phase = Phase.HEAD  # also for a pipelined request behind one being served

    def on_headers_complete(self) -> None:
        self.guard.busy(self)
        self.phase = Phase.BODY
        self._arm(self.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.phase is not Phase.BODY:
            return
        if self.cycle.response_complete:  # the app answered before the body had arrived
            self._idle()
        else:
            self.phase = Phase.SERVING
            self._disarm()

    def shutdown(self) -> None:
        """The server stops: drop the connection now if idle, else once its response is sent."""
        self.stopping = True
        if self.cycle is None or self.cycle.response_complete:
            self._drop()
        else:
            super().shutdown()

    def _drop(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.close()  # the answer's last bytes go first
        else:
            self.transport.abort()  # nothing to say: no goodbye to wait for

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.stopping:
            self._drop()
            return
        # a body still arriving stays under its deadline; on_message_complete goes idle after it
        if self.phase is not Phase.BODY and not self.pipeline and not self.transport.is_closing():
            self._idle()

    def _idle(self) -> None:
        """Between requests: evictable, and the next head is due within head_timeout_s."""
        self.phase = Phase.HEAD
        self.guard.waiting(self)
        self._arm(self.head_timeout_s)  # uvicorn's shorter keep-alive timer runs too, until data comes

    def _refuse(self, status: bytes) -> None:
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n" % status)
        self.transport.close()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        """Too slow: close. A request the app is waiting on sees the disconnect and gives up."""
        self.deadline = None
        if self.phase is Phase.SERVING or self.transport.is_closing():
            return
        if self.phase is Phase.HEAD and self.head_bytes:
            self._refuse(b"408 Request Timeout")
        else:
            self.transport.close()


def serve(app: Any, host: str, port: int, admin: AdminConfig, ssl_context: ssl.SSLContext | None) -> None:
    """Run `app` on host:port with the guarded protocol until SIGTERM/SIGINT."""
    import uvicorn

    limit = connection_cap(admin.max_connections, raise_fd_limit())
    guard = ConnectionGuard(limit)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=GuardedProtocol.configured(guard, admin.head_timeout_s, admin.body_timeout_s),
        timeout_keep_alive=int(KEEP_ALIVE_S),
        log_level="warning",
        log_config=None,  # uvicorn's records go through the handler fortress.logs.configure() set up
        proxy_headers=False,
        server_header=False,
        ssl_context_factory=(lambda _config, _default: ssl_context) if ssl_context else None,
    )
    log.info("admin: at most %d connections, request heads within %g s", limit, admin.head_timeout_s)
    uvicorn.Server(config).run()
