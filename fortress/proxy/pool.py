"""The hot path's backend connections: opened, kept alive, reused and expired here, and nowhere else.

Like httpcore's pool it sees connections only through predicates (`reusable`, `closed`), decides first,
then does the I/O. Per backend one LIFO deque of idle connections: acquire and release are O(1), the most
recently used connection (the one least likely to have been closed by the backend) goes out first, and
idle ones older than `idle_expiry_s` are closed by `sweep()`. A connection comes back only through
`release()` once its response is fully framed, or `discard()` when it failed; the exchange does exactly
one of the two for every connection it got. When a backend's endpoint changes or it goes away (`drop()`),
its connections in flight are retired: they are closed when they come back, never pooled again. Its
repr doubles as a test oracle. See docs/architecture.md, "The pool".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

from fortress.backends.target import Target
from fortress.proxy.outbox import Outbox
from fortress.proxy.upstream import UpstreamProtocol

IDLE_EXPIRY_S = 30.0  # below common server keep-alive timeouts (nginx 75 s, Go's none, Cloudflare 900 s)

Connector = Callable[[Target], Awaitable[UpstreamProtocol]]


class Pool:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        out: Outbox,
        max_idle: int = 64,
        idle_expiry_s: float = IDLE_EXPIRY_S,
        connect: Connector | None = None,
    ) -> None:
        self.loop = loop
        self.out = out
        self.max_idle = max_idle
        self.idle_expiry_s = idle_expiry_s
        self._connect = connect or self._open_socket
        self._idle: dict[str, deque[UpstreamProtocol]] = {}
        # per backend: connections handed out, not yet given back (a retired one is in none of these)
        self._active: dict[str, set[UpstreamProtocol]] = {}
        self.created = 0
        self.reused = 0
        self.expired = 0
        self.now = time.monotonic()  # a coarse clock, moved by sweep(): idle stamps need no precision

    # -- decisions, O(1) -----------------------------------------------------------------------------
    def acquire(self, backend: str) -> UpstreamProtocol | None:
        """The most recently used idle connection that is still open, or None. It was reusable when it
        came back (release), and idle, nothing but the backend closing it can change that."""
        idle = self._idle.get(backend)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                self.reused += 1
                self._active[backend].add(conn)
                return conn
        return None

    def release(self, conn: UpstreamProtocol) -> None:
        """A connection whose response is fully framed: idle again if it may be reused, else closed (as is
        one whose backend changed or went away while it was out: it leads to the old endpoint)."""
        backend = conn.backend
        try:  # a backend has both a set of active and a deque of idle connections, from open() to drop()
            self._active[backend].remove(conn)
        except KeyError:  # retired by drop(): its backend's set is gone, or is a new one without it
            conn.close()
            return
        idle = self._idle[backend]
        if len(idle) < self.max_idle and not conn.closed:  # reusable: the exchange has detached it
            conn.idle_since = self.now
            idle.append(conn)
        else:
            conn.close()

    def discard(self, conn: UpstreamProtocol) -> None:
        """A connection that failed or was abandoned mid-response: closed, never reused."""
        active = self._active.get(conn.backend)
        if active is not None:
            active.discard(conn)
        conn.close()

    # -- I/O -------------------------------------------------------------------------------------------
    async def open(self, target: Target, timeout_s: float) -> UpstreamProtocol:
        """A new connection (TLS included); OSError or TimeoutError when it cannot be made in time."""
        conn = await asyncio.wait_for(self._connect(target), timeout_s)
        self.created += 1
        active = self._active.get(target.name)
        if active is None:
            active = self._active[target.name] = set()
            self._idle.setdefault(target.name, deque())
        active.add(conn)
        return conn

    async def _open_socket(self, target: Target) -> UpstreamProtocol:
        _, conn = await self.loop.create_connection(
            lambda: UpstreamProtocol(target.name, self.out),
            target.host,
            target.port,
            ssl=target.ssl,
            server_hostname=target.host if target.ssl else None,
        )
        return conn

    def sweep(self, now: float) -> None:
        """Close idle connections past their expiry (oldest sit at the left end of each deque)."""
        self.now = now
        cutoff = now - self.idle_expiry_s
        for idle in self._idle.values():
            while idle and (idle[0].idle_since < cutoff or not idle[0].reusable):
                idle.popleft().close()
                self.expired += 1

    def drop(self, backend: str) -> None:
        """Close the idle connections of a backend that changed or went away, and retire those in flight."""
        for conn in self._idle.pop(backend, ()):
            conn.close()
        self._active.pop(backend, None)

    def close_all(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    @property
    def active(self) -> int:
        return sum(map(len, self._active.values()))

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per backend (idle, active): the metrics' pool gauges."""
        names = self._idle.keys() | self._active.keys()
        return {name: (len(self._idle.get(name, ())), len(self._active.get(name, ()))) for name in names}

    def __repr__(self) -> str:
        idle = sum(len(d) for d in self._idle.values())
        return (
            f"<Pool [Connections: {self.active} active, {idle} idle | "
            f"created {self.created}, reused {self.reused}, expired {self.expired}]>"
        )
