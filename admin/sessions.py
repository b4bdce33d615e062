"""Admin sessions kept in the database: the browser holds a random token, the admin_sessions table its hash.

A session ends when its row goes: at sign-out, at expiry, when the account's password changes (a
trigger, whoever changes it) or when the account is removed. A copied cookie is then worth nothing.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import aiosqlite

from admin.queries import AdminAccount, get_admin
from fortress.state.db import transaction

COOKIE = "fortress_session"


@dataclass(frozen=True)
class SessionRow:
    ref: str  # a short public handle (a prefix of the token's hash), for listing
    created_at: float
    expires_at: float
    ip: str
    user_agent: str
    current: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start(db: aiosqlite.Connection, admin: str, *, lifetime_s: float, ip: str, user_agent: str) -> str:
    """A new session for `admin`; returns the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    async with transaction(db):
        await db.execute("DELETE FROM admin_sessions WHERE expires_at <= ?", (now,))
        await db.execute(
            "INSERT INTO admin_sessions (token_hash, admin, created_at, expires_at, ip, user_agent)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash(token), admin, now, now + lifetime_s, ip, user_agent[:200]),
        )
    return token


async def account_for(db: aiosqlite.Connection, token: str) -> AdminAccount | None:
    """The account a live session token belongs to; None when unknown, ended or expired."""
    async with db.execute(
        "SELECT admin FROM admin_sessions WHERE token_hash = ? AND expires_at > ?",
        (token_hash(token), time.time()),
    ) as cur:
        row = await cur.fetchone()
    return await get_admin(db, row[0]) if row else None


async def end(db: aiosqlite.Connection, token: str) -> None:
    await db.execute("DELETE FROM admin_sessions WHERE token_hash = ?", (token_hash(token),))


async def end_others(db: aiosqlite.Connection, admin: str, keep: str) -> int:
    """End every session of `admin` but the one holding `keep`; how many ended."""
    cur = await db.execute(
        "DELETE FROM admin_sessions WHERE admin = ? AND token_hash != ?", (admin, token_hash(keep))
    )
    return cur.rowcount


async def list_for(db: aiosqlite.Connection, admin: str, current: str) -> list[SessionRow]:
    mine = token_hash(current)
    async with db.execute(
        "SELECT token_hash, created_at, expires_at, ip, user_agent FROM admin_sessions"
        " WHERE admin = ? AND expires_at > ? ORDER BY created_at DESC",
        (admin, time.time()),
    ) as cur:
        rows = await cur.fetchall()
    return [SessionRow(h[:8], created, expires, ip, ua, h == mine) for h, created, expires, ip, ua in rows]
