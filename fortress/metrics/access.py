"""Who may read `/metrics` (DESIGN §6.5): a pure decision on the client address and the key's scope.

Served for an admin-scope key from anywhere, and for addresses in `[metrics] allow` (default loopback)
with or without a key, so a Prometheus on the same host scrapes with no secret in its config. A key that
was presented must have been checked already (an invalid one gets the usual 401, and counts as a failed
attempt); this only sees the scope of a valid key, or None when none was sent. With `enabled = false`
the route does not exist (404, as any unknown path).
"""

from __future__ import annotations

from typing import NamedTuple

from fortress.config import MetricsConfig
from fortress.pipeline.ip_policy import IpPolicy


class Verdict(NamedTuple):
    status: int  # 200: render the metrics; otherwise answer this error
    message: str


SERVE = Verdict(200, "")
NOT_FOUND = Verdict(404, "path /metrics not found")
NEED_KEY = Verdict(401, "metrics need an admin-scope API key, or a client address in [metrics] allow")
NEED_ADMIN = Verdict(403, "forbidden: metrics need an API key with the admin scope")


class MetricsAccess:
    """Compiled once from the config; `decide()` is per scrape."""

    __slots__ = ("_allow", "_enabled")

    def __init__(self, cfg: MetricsConfig) -> None:
        self._enabled = cfg.enabled
        # an empty list means nobody by address (unlike [security] ip_allow, where empty is everyone)
        self._allow = IpPolicy(cfg.allow, ()) if cfg.allow else None

    def decide(self, client_ip: str, scope: str | None) -> Verdict:
        """`client_ip` as stage 2 resolved it; `scope` of the valid key presented, None without a key."""
        if not self._enabled:
            return NOT_FOUND
        if scope == "admin" or (self._allow is not None and self._allow.allows(client_ip)):
            return SERVE
        return NEED_KEY if scope is None else NEED_ADMIN
