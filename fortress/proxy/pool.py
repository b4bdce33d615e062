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
        # per backend: its open connections, idle or handed out (a retired one is in none of these); the
        # active ones are those not idle, so taking an idle one out or giving it back moves it in one place
        self._conns: dict[str, set[UpstreamProtocol]] = {}
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
                return conn
            self._conns[backend].discard(conn)
        return None

    def release(self, conn: UpstreamProtocol) -> None:
        """A connection whose response is fully framed, let go of by its exchange: idle again if it may be
        reused, reading (an idle connection must see its close), else closed (as is one whose backend
        changed or went away while it was out: it leads to the old endpoint)."""
        conn.ex = None
        backend = conn.backend
        # a backend has a set of open and a deque of idle connections, from open() to drop()
        if conn not in self._conns.get(backend, ()):  # retired by drop(): its backend is gone, or is new
            conn.close()
            return
        idle = self._idle[backend]
        if len(idle) < self.max_idle and not conn.closed:  # reusable
            flow = conn.flow
            if flow.read_paused:  # type: ignore[union-attr]  # connected: the pool holds no other
                flow.resume_reading()  # type: ignore[union-attr]
            conn.idle_since = self.now
            idle.append(conn)
        else:
            self._conns[backend].discard(conn)
            conn.close()

    def discard(self, conn: UpstreamProtocol) -> None:
        """A connection that failed or was abandoned mid-response, let go of by its exchange: closed, never
        reused."""
        conn.ex = None
        conns = self._conns.get(conn.backend)
        if conns is not None:
            conns.discard(conn)
        conn.close()

    # -- I/O -------------------------------------------------------------------------------------------
    async def open(self, target: Target, timeout_s: float) -> UpstreamProtocol:
        """A new connection (TLS included); OSError or TimeoutError when it cannot be made in time."""
        conn = await asyncio.wait_for(self._connect(target), timeout_s)
        self.created += 1
        conns = self._conns.get(target.name)
        if conns is None:
            conns = self._conns[target.name] = set()
            self._idle.setdefault(target.name, deque())
        conns.add(conn)
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
        for backend, idle in self._idle.items():
            while idle and (idle[0].idle_since < cutoff or not idle[0].reusable):
                conn = idle.popleft()
                self._conns[backend].discard(conn)
                conn.close()
                self.expired += 1

    def drop(self, backend: str) -> None:
        """Close the idle connections of a backend that changed or went away, and retire those in flight."""
        for conn in self._idle.pop(backend, ()):
            conn.close()
        self._conns.pop(backend, None)

    def close_all(self) -> None:
        for backend, idle in self._idle.items():
            while idle:
                conn = idle.pop()
                self._conns[backend].discard(conn)
                conn.close()

    @property
    def active(self) -> int:
        return sum(map(len, self._conns.values())) - sum(map(len, self._idle.values()))

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per backend (idle, active): the metrics' pool gauges."""
        counts = {}
        for name, conns in self._conns.items():
            idle = len(self._idle[name])
            counts[name] = (idle, len(conns) - idle)
        return counts

    def __repr__(self) -> str:
        idle = sum(len(d) for d in self._idle.values())
        return (
            f"<Pool [Connections: {self.active} active, {idle} idle | "
            f"created {self.created}, reused {self.reused}, expired {self.expired}]>"
        )
