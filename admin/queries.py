"""Admin-only SQL: admin accounts, audit listing, live proxy figures and analytics roll-ups.

Charts read the usage_hourly roll-ups (one row per hour x user x key x model x backend x status),
never raw usage, so they stay fast on long histories. Latency percentiles are the one figure a
roll-up cannot give; they come from raw rows, sampled evenly when the range holds many.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import aiosqlite

from fortress.state import repo
from fortress.state.db import transaction

PERCENTILE_SAMPLE = 10_000


@dataclass(frozen=True)
class AdminAccount:
    name: str
    password_hash: str
    role: str
    last_login_at: float | None
    theme: str = "light"


async def get_admin(db: aiosqlite.Connection, name: str) -> AdminAccount | None:
    async with db.execute(
        "SELECT name, password_hash, role, last_login_at, theme FROM admins WHERE name = ?", (name,)
    ) as cur:
        row = await cur.fetchone()
    return AdminAccount(*row) if row else None


async def list_admins(db: aiosqlite.Connection) -> list[AdminAccount]:
    async with db.execute("SELECT name, '', role, last_login_at, theme FROM admins ORDER BY name") as cur:
        return [AdminAccount(*r) for r in await cur.fetchall()]


async def set_theme(db: aiosqlite.Connection, name: str, theme: str) -> None:
    """An account's own look: a preference, not configuration, so no config_version bump or audit."""
    await db.execute("UPDATE admins SET theme = ? WHERE name = ?", (theme, name))


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


def capabilities(live: ProxyLive) -> dict[str, dict[str, list[str]]]:
    """What the proxy learnt of each model (backend -> model -> capability names), from the workers'
    reports; every worker learns on its own, so their views are merged."""
    merged: dict[str, dict[str, list[str]]] = {}
    for detail in live.detail:
        reported = detail.get("capabilities")
        for backend, models in (reported if isinstance(reported, dict) else {}).items():
            if isinstance(models, dict):
                merged.setdefault(backend, {}).update(models)
    return merged


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


HEADERS: dict[str, tuple[str, ...]] = {
    # the table behind each chart, and the header of its CSV export
    "hourly": ("hour_start_unix", "requests", "errors"),
    "daily": ("day", "requests", "errors", "prompt_tokens", "completion_tokens"),
    "models": ("model", "requests", "prompt_tokens", "completion_tokens"),
    "backends": ("backend", "requests", "errors", "avg_duration_ms", "avg_ttfb_ms"),
    "status": ("status", "requests"),
    "users": ("user", "requests", "prompt_tokens", "completion_tokens"),
}
_EPOCH = date(1970, 1, 1)


async def tables(db: aiosqlite.Connection, rng: Range) -> dict[str, list[tuple]]:
    """Every analytics table for the range, from one pass over the roll-ups.

    One scan summed in Python beats one GROUP BY per chart: SQLite sorts for each GROUP BY,
    and that sort, not the scan, is what costs on a long history.
    """
    where, args = rng.where()
    sql = (
        "SELECT hour, user_name, model, backend, status, requests, prompt_tokens, completion_tokens, "
        f"ttfb_ms_sum, duration_ms_sum FROM usage_hourly WHERE {where}"
    )
    async with db.execute(sql, args) as cur:
        cur.row_factory = None  # plain tuples: no sqlite3.Row object per roll-up row
        return summarise(await cur.fetchall())


def summarise(rows: Iterable[Sequence]) -> dict[str, list[tuple]]:
    """Roll-up rows (hour, user, model, backend, status, requests, prompt, completion, ttfb_sum,
    duration_sum) -> the chart tables, sorted as shown (pure)."""
    hourly: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    daily: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    models: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    users: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    backends: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    status: dict[int, int] = defaultdict(int)
    for hour, user, model, backend, code, n, prompt, completion, ttfb, duration in rows:
        err = n if code >= 400 else 0
        h = hourly[hour]
        h[0] += n
        h[1] += err
        d = daily[hour // 24]
        d[0] += n
        d[1] += err
        d[2] += prompt
        d[3] += completion
        m = models[model]
        m[0] += n
        m[1] += prompt
        m[2] += completion
        u = users[user]
        u[0] += n
        u[1] += prompt
        u[2] += completion
        b = backends[backend]
        b[0] += n
        b[1] += err
        b[2] += duration
        b[3] += ttfb
        status[code] += n
    by_count = lambda item: (-item[1][0], item[0])  # noqa: E731 - busiest first, then by name
    return {
        "hourly": [(h * 3600, *v) for h, v in sorted(hourly.items())],
        "daily": [((_EPOCH + timedelta(days=d)).isoformat(), *v) for d, v in sorted(daily.items())],
        "models": [(k, *v) for k, v in sorted(models.items(), key=by_count)],
        "backends": [
            (k, int(n), int(e), round(dur / n, 1), round(ttfb / n, 1))
            for k, (n, e, dur, ttfb) in sorted(backends.items(), key=by_count)
        ],
        "status": sorted(status.items()),
        "users": [(k, *v) for k, v in sorted(users.items(), key=by_count)],
    }


@dataclass(frozen=True)
class Latency:
    count: int  # requests in the range
    sampled: int  # rows the percentiles were computed from
    ttfb: dict[str, float]
    duration: dict[str, float]


QUANTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99))


async def latency(db: aiosqlite.Connection, rng: Range, total: int) -> Latency:
    """Percentiles of raw usage in the range, from about PERCENTILE_SAMPLE evenly spread rows.

    `total` (the request count from the roll-ups) sets the stride. Everyone: every k-th id
    between the first and last row of the range (ids follow time), fetched by primary key, so
    the cost does not grow with the history. One user: every k-th row of their keys, read
    through the (key_id, ts) index.
    """
    stride = max(1, math.ceil(total / PERCENTILE_SAMPLE))
    t0, t1 = rng.start * 3600, rng.end * 3600
    if rng.user:
        where, args = rng.where()
        async with db.execute(f"SELECT DISTINCT key_id FROM usage_hourly WHERE {where}", args) as cur:
            keys = [r[0] for r in await cur.fetchall() if r[0]]
        sql = (
            f"SELECT ttfb_ms, duration_ms FROM usage WHERE key_id IN ({','.join('?' * len(keys))}) "
            "AND ts >= ? AND ts < ? AND id % ? = 0"
        )
        params: list[object] = [*keys, t0, t1, stride]
    else:
        first = await _one(db, "SELECT id FROM usage WHERE ts >= ? ORDER BY ts LIMIT 1", t0)
        last = await _one(db, "SELECT id FROM usage WHERE ts < ? ORDER BY ts DESC LIMIT 1", t1)
        if first is None or last is None:
            return Latency(total, 0, {}, {})
        lo, hi = min(first, last), max(first, last)
        sql = (
            "WITH RECURSIVE pick(i) AS (SELECT ? UNION ALL SELECT i + ? FROM pick WHERE i + ? <= ?) "
            "SELECT ttfb_ms, duration_ms FROM pick JOIN usage ON usage.id = pick.i WHERE ts >= ? AND ts < ?"
        )
        params = [lo, stride, stride, hi, t0, t1]
    async with db.execute(sql, params) as cur:
        rows = await cur.fetchall()
    ttfb = sorted(r[0] for r in rows if r[0] is not None)
    dur = sorted(r[1] for r in rows)
    return Latency(total, len(rows), _quantiles(ttfb), _quantiles(dur))


async def _one(db: aiosqlite.Connection, sql: str, *args: object) -> int | None:
    async with db.execute(sql, args) as cur:
        row = await cur.fetchone()
    return None if row is None else int(row[0])


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {name: values[min(len(values) - 1, int(q * len(values)))] for name, q in QUANTILES}
