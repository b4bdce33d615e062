"""Login throttling: failures counted per account and per client IP in a sliding window (pure, no I/O).

A locked account or IP is refused with 429 before the password is even checked, so a locked-out
attacker learns nothing and costs no scrypt work.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class LoginThrottle:
    account_limit: int = 10
    ip_limit: int = 20
    window_s: float = 900.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, account: str, ip: str, now: float) -> float:
        """Seconds until a login may be tried again; 0 when allowed."""
        wait = 0.0
        for key, limit in ((f"a:{account}", self.account_limit), (f"i:{ip}", self.ip_limit)):
            times = self._recent(key, now)
            if len(times) >= limit:
                wait = max(wait, times[len(times) - limit] + self.window_s - now)
        return wait

    def fail(self, account: str, ip: str, now: float) -> None:
        for key in (f"a:{account}", f"i:{ip}"):
            self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of random names
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}

    def succeed(self, account: str) -> None:
        """A good password clears the account's count (the IP's count stays)."""
        self._failures.pop(f"a:{account}", None)
