"""Admin-only SQL: admin accounts, audit listing, live proxy figures and analytics roll-ups.

Charts read the usage_hourly roll-ups (one row per hour x user x key x model x backend x status),
never raw usage, so they stay fast on long histories. Latency percentiles are the one figure a
roll-up cannot give; they come from raw rows, sampled evenly when the range holds many.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import aiosqlite

from fortress.state import repo
from fortress.state.db import transaction

PERCENTILE_SAMPLE = 20_000


@dataclass(frozen=True)
class AdminAccount:
    name: str
    password_hash: str
    role: str
    last_login_at: float | None


async def get_admin(db: aiosqlite.Connection, name: str) -> AdminAccount | None:
    async with db.execute(
        "SELECT name, password_hash, role, last_login_at FROM admins WHERE name = ?", (name,)
    ) as cur:
        row = await cur.fetchone()
    return AdminAccount(*row) if row else None


async def list_admins(db: aiosqlite.Connection) -> list[AdminAccount]:
    async with db.execute("SELECT name, '', role, last_login_at FROM admins ORDER BY name") as cur:
        return [AdminAccount(*r) for r in await cur.fetchall()]


async def record_login(db: aiosqlite.Connection, name: str, ip: str) -> None:
    async with transaction(db):
        await db.execute("UPDATE admins SET last_login_at = ? WHERE name = ?", (time.time(), name))
        await repo.audit(db, name, "admin.login", name, ip=ip)


async def remove_admin(db: aiosqlite.Connection, name: str, *, actor: str, ip: str) -> None:
    """Remove an admin account; the last account with role admin cannot be removed."""
    async with transaction(db):
        async with db.execute(
            "SELECT count(*) FROM admins WHERE role = 'admin' AND name != ?", (name,)
        ) as cur:
            (others,) = await cur.fetchone()  # type: ignore[misc]
        if not others:
            raise repo.RepoError("cannot remove the last account with role admin")
        cur = await db.execute("DELETE FROM admins WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise repo.RepoError(f"no admin account named {name!r}")
        await repo.audit(db, actor, "admin.remove", name, ip=ip)


@dataclass(frozen=True)
class AuditRow:
    ts: float
    actor: str
    ip: str
    action: str
    target: str
    detail: str


async def list_audit(
    db: aiosqlite.Connection, *, limit: int = 100, before: float | None = None, q: str = ""
) -> list[AuditRow]:
    """Newest first; `before` pages back by timestamp; `q` matches actor, action or target."""
    sql = "SELECT ts, actor, ip, action, target, detail FROM audit WHERE ts < ?"
    args: list[object] = [before if before is not None else math.inf]
    if q:
        sql += " AND (actor LIKE ? OR action LIKE ? OR target LIKE ?)"
        args += [f"%{q}%"] * 3
    sql += " ORDER BY ts DESC LIMIT ?"
    args.append(limit)
    async with db.execute(sql, args) as cur:
        return [AuditRow(*r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class ProxyLive:
    workers: int
    in_flight: int
    requests: int
    errors: int
    connections: int
    ts: float
    detail: list[dict]


async def proxy_live(db: aiosqlite.Connection, fresh_s: float = 5.0) -> ProxyLive:
    """Sum of the workers' last reports younger than `fresh_s` (a dead worker drops out)."""
    async with db.execute(
        "SELECT ts, in_flight, requests, errors, connections, detail FROM proxy_stats WHERE ts > ?",
        (time.time() - fresh_s,),
    ) as cur:
        rows = await cur.fetchall()
    details = []
    for r in rows:
        try:
            details.append(json.loads(r[5]))
        except ValueError:
            details.append({})
    return ProxyLive(
        workers=len(rows),
        in_flight=sum(r[1] for r in rows),
        requests=sum(r[2] for r in rows),
        errors=sum(r[3] for r in rows),
        connections=sum(r[4] for r in rows),
        ts=max((r[0] for r in rows), default=0.0),
        detail=details,
    )


async def busiest_keys(
    db: aiosqlite.Connection, hours: int = 1, limit: int = 8
) -> list[tuple[str, str, int]]:
    """(key id, user, requests) over the last `hours` whole hours plus the current one."""
    h = int(time.time() // 3600)
    async with db.execute(
        "SELECT key_id, user_name, sum(requests) AS n FROM usage_hourly WHERE hour >= ? AND key_id != '' "
        "GROUP BY key_id, user_name ORDER BY n DESC LIMIT ?",
        (h - hours, limit),
    ) as cur:
        return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


# ---- analytics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Whole UTC hours [start, end) and an optional user filter."""

    start: int
    end: int
    user: str = ""

    def where(self) -> tuple[str, list[object]]:
        sql, args = "hour >= ? AND hour < ?", [self.start, self.end]
        if self.user:
            sql += " AND user_name = ?"
            args.append(self.user)
        return sql, args


TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    # name: (CSV header, SQL over usage_hourly filtered by Range.where(); {w} is the filter)
    "hourly": (
        ("hour_start_unix", "requests", "errors"),
        "SELECT hour * 3600, sum(requests), sum(CASE WHEN status >= 400 THEN requests ELSE 0 END) "
        "FROM usage_hourly WHERE {w} GROUP BY hour ORDER BY hour",
    ),
    "daily": (
        ("day", "requests", "errors", "prompt_tokens", "completion_tokens"),
        "SELECT date(hour / 24 * 86400, 'unixepoch'), sum(requests), "
        "sum(CASE WHEN status >= 400 THEN requests ELSE 0 END), sum(prompt_tokens), sum(completion_tokens) "
        "FROM usage_hourly WHERE {w} GROUP BY hour / 24 ORDER BY hour / 24",
    ),
    "models": (
        ("model", "requests", "prompt_tokens", "completion_tokens"),
        "SELECT model, sum(requests) AS n, sum(prompt_tokens), sum(completion_tokens) "
        "FROM usage_hourly WHERE {w} GROUP BY model ORDER BY n DESC, model",
    ),
    "backends": (
        ("backend", "requests", "errors", "avg_duration_ms", "avg_ttfb_ms"),
        "SELECT backend, sum(requests) AS n, sum(CASE WHEN status >= 400 THEN requests ELSE 0 END), "
        "round(sum(duration_ms_sum) / sum(requests), 1), round(sum(ttfb_ms_sum) / sum(requests), 1) "
        "FROM usage_hourly WHERE {w} GROUP BY backend ORDER BY n DESC, backend",
    ),
    "status": (
        ("status", "requests"),
        "SELECT status, sum(requests) AS n FROM usage_hourly WHERE {w} GROUP BY status ORDER BY status",
    ),
    "users": (
        ("user", "requests", "prompt_tokens", "completion_tokens"),
        "SELECT user_name, sum(requests) AS n, sum(prompt_tokens), sum(completion_tokens) "
        "FROM usage_hourly WHERE {w} GROUP BY user_name ORDER BY n DESC, user_name",
    ),
}


async def table(db: aiosqlite.Connection, name: str, rng: Range) -> list[tuple]:
    """The rows behind one chart (also what its CSV export contains)."""
    where, args = rng.where()
    async with db.execute(TABLES[name][1].format(w=where), args) as cur:
        return [tuple(r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class Latency:
    count: int  # requests in the range
    sampled: int  # rows the percentiles were computed from
    ttfb: dict[str, float]
    duration: dict[str, float]


QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


async def latency(db: aiosqlite.Connection, rng: Range, total: int) -> Latency:
    """Percentiles of raw usage in the range; every k-th row (by id) when there are many.

    `total` is the request count from the roll-ups; it sets the stride so about
    PERCENTILE_SAMPLE rows are read whatever the history size.
    """
    stride = max(1, math.ceil(total / PERCENTILE_SAMPLE))
    sql = "SELECT ttfb_ms, duration_ms FROM usage WHERE ts >= ? AND ts < ?"
    args: list[object] = [rng.start * 3600, rng.end * 3600]
    if stride > 1:
        sql += " AND id % ? = 0"
        args.append(stride)
    if rng.user:
        sql += " AND user_name = ?"
        args.append(rng.user)
    async with db.execute(sql, args) as cur:
        rows = await cur.fetchall()
    ttfb = sorted(r[0] for r in rows if r[0] is not None)
    dur = sorted(r[1] for r in rows)
    return Latency(total, len(rows), _quantiles(ttfb), _quantiles(dur))


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {name: values[min(len(values) - 1, int(q * len(values)))] for name, q in QUANTILES}
