"""Per-address counting of failed authentications and lockout (DESIGN §2 stage 5), shared like the limits.

Contract: `step` is the rule: the `limit`-th failure inside a fixed window that starts at the first
failure locks the address for `lockout_s`; failures while locked change nothing, and a fresh window
starts when the lockout ends. Every store applies it to its own state: `AuthFailures` here (one process),
the shared table of `fortress.pipeline.shm` (the workers of one machine, so N workers do not give an
address N times the limit), Redis (`limits.RedisLimiter`, many machines). `Lockout` is what the chain
holds: the policy's numbers bound to the store the limiter uses, asked `locked(ip, now)` before a key is
even looked at and told `failure(ip, now)` after a bad one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fortress.pipeline.limits import Limiter


def step(
    start: float, count: int, until: float, now: float, limit: int, window_s: float, lockout_s: float
) -> tuple[float, int, float]:
    """One failure at `now` on state (window start, failures in it, locked until); the new state."""
    if until > now:
        return start, count, until  # already locked: the lockout does not grow with further attempts
    if count == 0 or now - start >= window_s:
        start, count = now, 0
    count += 1
    if count >= limit:
        until = now + lockout_s
        return until, 0, until
    return start, count, until


class AuthFailures:
    """The store for one process: a dict of [window start, failures, locked until, window_s] per address.

    Memory is bounded by `max_entries`: when full, entries whose window and lockout are over go first,
    then the oldest unlocked ones, so a flood of addresses cannot grow the dict nor easily free a locked
    attacker.
    """

    __slots__ = ("_entries", "max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[str, list[float]] = {}

    def locked(self, ip: str, now: float) -> float:
        """Seconds of lockout left for `ip`, 0.0 when it may try."""
        entry = self._entries.get(ip)
        if entry is None or entry[2] <= now:
            return 0.0
        return entry[2] - now

    def failure(self, ip: str, limit: int, window_s: float, lockout_s: float, now: float) -> float:
        """Count one failed authentication from `ip`; the seconds of lockout that follow (0.0: none)."""
        entries = self._entries
        entry = entries.get(ip)
        if entry is None:
            if len(entries) >= self.max_entries:
                self._evict(now)
            entry = entries[ip] = [0.0, 0.0, 0.0, window_s]
        start, count, until = step(entry[0], int(entry[1]), entry[2], now, limit, window_s, lockout_s)
        entry[:] = [start, count, until, window_s]
        return max(0.0, until - now)

    def _evict(self, now: float) -> None:
        entries = self._entries
        stale = [
            ip for ip, (start, _, until, window) in entries.items() if until <= now and now - start >= window
        ]
        for ip in stale:
            del entries[ip]
        if len(entries) < self.max_entries:
            return
        # still full of live entries: drop the oldest tenth that is not locked (insertion order = age)
        quota = max(1, self.max_entries // 10)
        unlocked = [ip for ip, entry in entries.items() if entry[2] <= now][:quota]
        for ip in unlocked:
            del entries[ip]
        if len(entries) >= self.max_entries:  # every entry is locked: forget the oldest lockouts
            for ip in list(entries)[:quota]:
                del entries[ip]

    def __len__(self) -> int:
        return len(self._entries)


class Lockout:
    """The chain's view: the policy's limit, window and lockout, applied through a shared store."""

    __slots__ = ("limit", "locked", "lockout_s", "store", "window_s")

    def __init__(
        self, store: Limiter, limit: int = 50, window_s: float = 60.0, lockout_s: float = 300.0
    ) -> None:
        self.store = store
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        # locked(ip, now): seconds of lockout left for `ip`, 0.0 when it may try; asked on every request
        # with a key, so the store's own method (no call through this class)
        self.locked: Callable[[str, float], float] = store.auth_locked

    def failure(self, ip: str, now: float) -> float:
        """Count one failed key from `ip`; the seconds of lockout that follow (0.0: none)."""
        return self.store.auth_failure(ip, self.limit, self.window_s, self.lockout_s, now)
