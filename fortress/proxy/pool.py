"""Keep-alive upstream connections: one LIFO deque of idle connections per backend.

Like httpcore's pool it sees connections only through predicates (`reusable`), decides first, then does
the I/O; acquire and release are O(1). A connection returns here only once its response is fully framed.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol


class Reusable(Protocol):
    @property
    def reusable(self) -> bool: ...

    def close(self) -> None: ...


class Pool:
    def __init__(self, max_idle: int = 64) -> None:
        self.max_idle = max_idle
        self._idle: dict[str, deque[Reusable]] = {}
        self.created = 0
        self.reused = 0

    def acquire(self, backend: str) -> Reusable | None:
        """The most recently used idle connection that is still reusable, or None."""
        idle = self._idle.get(backend)
        while idle:
            conn = idle.pop()
            if conn.reusable:
                self.reused += 1
                return conn
        return None

    def release(self, backend: str, conn: Reusable) -> None:
        idle = self._idle.get(backend)
        if idle is None:
            idle = self._idle[backend] = deque()
        if len(idle) >= self.max_idle or not conn.reusable:
            conn.close()
            return
        idle.append(conn)

    def drop(self, backend: str) -> None:
        """Close the idle connections of a backend that changed or went away."""
        for conn in self._idle.pop(backend, ()):
            conn.close()

    def close_all(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()

    def __repr__(self) -> str:
        idle = sum(len(d) for d in self._idle.values())
        return f"<Pool [Connections: {idle} idle | created {self.created}, reused {self.reused}]>"
