"""IP trust sessions in the database (DESIGN §6.1, `POST /auth`): start, end, list.

The proxy writes a row when a client sends `POST /auth` with a key and deletes it on `DELETE /auth`;
the admin lists live rows and ends them. Every change bumps config_version (migration 009), so every
worker's next snapshot has it; a worker never reads this table on a request. Each start and end
appends an audit row (the actor is the key for the proxy's, the admin account for the admin's).
Expired rows are simply ignored by readers, and pruned whenever a session starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from fortress.state.db import transaction
from fortress.state.repo import audit


@dataclass(frozen=True)
class TrustRow:
    ip: str
    key_id: str
    user: str
    created_at: float
    expires_at: float


async def start(db: aiosqlite.Connection, ip: str, key_id: str, ttl_s: float) -> float:
    """Trust `ip` as `key_id` for `ttl_s` from now (replacing any session of that address); its end."""
    now = time.time()
    async with transaction(db):
        await db.execute("DELETE FROM ip_trust WHERE expires_at <= ?", (now,))
        await db.execute(
            "INSERT INTO ip_trust (ip, key_id, created_at, expires_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(ip) DO UPDATE SET key_id = excluded.key_id, created_at = excluded.created_at,"
            " expires_at = excluded.expires_at",
            (ip, key_id, now, now + ttl_s),
        )
        await audit(db, f"key {key_id}", "trust.start", ip, f"for {ttl_s:g} s", ip=ip)
    return now + ttl_s


async def end(db: aiosqlite.Connection, ip: str, *, key_id: str | None, actor: str, from_ip: str) -> bool:
    """End the session of `ip` (only if it is `key_id`'s, when given); False when there was none."""
    async with transaction(db):
        if key_id is None:
            cur = await db.execute("DELETE FROM ip_trust WHERE ip = ?", (ip,))
        else:
            cur = await db.execute("DELETE FROM ip_trust WHERE ip = ? AND key_id = ?", (ip, key_id))
        ended = cur.rowcount > 0
        if ended:
            await audit(db, actor, "trust.end", ip, ip=from_ip)
    return ended


async def live(db: aiosqlite.Connection) -> list[TrustRow]:
    """Sessions not yet expired, the latest ending first."""
    async with db.execute(
        "SELECT t.ip, t.key_id, u.name, t.created_at, t.expires_at FROM ip_trust t"
        " JOIN api_keys k ON k.id = t.key_id JOIN users u ON u.id = k.user_id"
        " WHERE t.expires_at > ? ORDER BY t.expires_at DESC",
        (time.time(),),
    ) as cur:
        rows = await cur.fetchall()
    return [TrustRow(r[0], r[1], r[2], r[3], r[4]) for r in rows]


class TrustTable:
    """The proxy's view (worker.TrustStore): start and end sessions on its own connection."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def start(self, ip: str, key_id: str, ttl_s: float) -> float:
        return await start(self.db, ip, key_id, ttl_s)

    async def end(self, ip: str, key_id: str) -> bool:
        return await end(self.db, ip, key_id=key_id, actor=f"key {key_id}", from_ip=ip)
