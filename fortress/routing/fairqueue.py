"""A bounded wait queue that serves keys in round robin, so one busy key cannot starve the others.

Pure data structure: the router asks it for the next waiter it can serve when a slot frees; the
proxy owns the futures and the timeouts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class FairQueue(Generic[T]):
    """FIFO within a key, round robin across keys; `limit` waiters in all, `per_key` per key."""

    def __init__(self, limit: int = 256, per_key: int | None = None) -> None:
        self.limit = limit
        self.per_key = limit if per_key is None else per_key
        self._by_key: dict[str, deque[T]] = {}
        self._order: deque[str] = deque()  # keys with waiters, next to serve first
        self.size = 0  # waiters in all (len()): an attribute the router reads after every request

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<FairQueue [{self.size} waiting, {len(self._by_key)} keys]>"

    def push(self, key: str, item: T) -> bool:
        """Add a waiter; False when the queue (or this key's share of it) is full."""
        waiting = self._by_key.get(key)
        if self.size >= self.limit or (waiting is not None and len(waiting) >= self.per_key):
            return False
        if waiting is None:
            waiting = self._by_key[key] = deque()
            self._order.append(key)
        waiting.append(item)
        self.size += 1
        return True

    def remove(self, key: str, item: T) -> bool:
        """Withdraw a waiter (timed out, client gone); False if it was not waiting."""
        waiting = self._by_key.get(key)
        if waiting is None or item not in waiting:
            return False
        waiting.remove(item)
        self.size -= 1
        if not waiting:
            del self._by_key[key]
            self._order.remove(key)
        return True

    def take(self, serve: Callable[[T], R | None]) -> tuple[T, R] | None:
        """The first waiter, in key round-robin order, for which `serve` returns a result.

        Within a key the oldest servable waiter wins; the served key moves to the back of the order,
        keys that could not be served keep their place.
        """
        for position, key in enumerate(self._order):
            waiting = self._by_key[key]
            for item in waiting:
                result = serve(item)
                if result is None:
                    continue
                waiting.remove(item)
                self.size -= 1
                del self._order[position]
                if waiting:
                    self._order.append(key)
                else:
                    del self._by_key[key]
                return item, result
        return None
