"""Per-IP counting of failed authentications and lockout (DESIGN §2 stage 5), per worker process.

Contract: `failure(ip, now)` records one failed key; the `limit`-th failure inside a fixed window that
starts at the first failure locks the IP for `lockout_s`. `locked(ip, now)` answers the seconds left
(0.0 when not locked) and is what the chain asks before even looking at a key. Memory is bounded by
`max_entries`: when full, entries whose window and lockout are over go first, then the oldest unlocked
ones, so a flood of addresses cannot grow the dict nor easily free a locked attacker.
The counts are per worker: with N workers an IP may try up to N * limit keys before every worker locks it,
which is still a bound; exactness is not worth a shared write on every failure.
"""

from __future__ import annotations


class AuthFailures:
    __slots__ = ("_entries", "limit", "lockout_s", "max_entries", "window_s")

    def __init__(
        self, limit: int = 50, window_s: float = 60.0, lockout_s: float = 300.0, max_entries: int = 100_000
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_entries = max_entries
        # ip -> [window start, failures in window, locked until]
        self._entries: dict[str, list[float]] = {}

    def locked(self, ip: str, now: float) -> float:
        """Seconds of lockout left for `ip`, 0.0 when it may try."""
        entry = self._entries.get(ip)
        if entry is None or entry[2] <= now:
            return 0.0
        return entry[2] - now

    def failure(self, ip: str, now: float) -> None:
        """Count one failed authentication from `ip`; lock it when the window's limit is reached."""
        entries = self._entries
        entry = entries.get(ip)
        if entry is None:
            if len(entries) >= self.max_entries:
                self._evict(now)
            entries[ip] = entry = [now, 0.0, 0.0]
        elif entry[2] > now:
            return  # already locked: the lockout does not grow with further attempts
        elif now - entry[0] >= self.window_s:
            entry[0] = now
            entry[1] = 0.0
        entry[1] += 1
        if entry[1] >= self.limit:
            entry[2] = now + self.lockout_s
            entry[0] = now + self.lockout_s  # a fresh window starts when the lockout ends
            entry[1] = 0.0

    def _evict(self, now: float) -> None:
        entries = self._entries
        window = self.window_s
        stale = [ip for ip, (start, _, until) in entries.items() if until <= now and now - start >= window]
        for ip in stale:
            del entries[ip]
        if len(entries) < self.max_entries:
            return
        # still full of live entries: drop the oldest tenth that is not locked (insertion order = age)
        quota = max(1, self.max_entries // 10)
        unlocked = [ip for ip, (_, _, until) in entries.items() if until <= now][:quota]
        for ip in unlocked:
            del entries[ip]
        if len(entries) >= self.max_entries:  # every entry is locked: forget the oldest lockouts
            for ip in list(entries)[:quota]:
                del entries[ip]

    def __len__(self) -> int:
        return len(self._entries)
