"""Opening the SQLite database and bringing its schema up to date.

Every process opens its own connections through connect(), so all of them share one set of pragmas
(WAL, a 5 s busy timeout, foreign keys). Connections run in autocommit mode: a write that needs
several statements says so with `async with transaction(db):`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

_HERE = Path(__file__).resolve().parent
SCHEMA_FILE = _HERE / "schema.sql"
MIGRATIONS_DIR = _HERE / "migrations"  # later changes: NNN_what.sql, NNN from 002 upwards
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, Path]]:
    """All migrations in order: schema.sql is version 1, then migrations/NNN_*.sql."""
    found = [(1, SCHEMA_FILE)]
    if MIGRATIONS_DIR.is_dir():
        for p in sorted(MIGRATIONS_DIR.iterdir()):
            m = _MIGRATION_NAME.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    versions = [v for v, _ in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(migrations())


def statements(script: str) -> list[str]:
    """Split an SQL script into complete statements (triggers keep their inner semicolons)."""
    out: list[str] = []
    buf: list[str] = []
    for line in script.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf.append(line)
        text = "\n".join(buf)
        if sqlite3.complete_statement(text):
            out.append(text.strip())
            buf = []
    if "".join(buf).strip():
        raise ValueError(f"incomplete SQL statement at the end of the script: {buf[0]!r}")
    return out


def _prepare_file(path: Path) -> None:
    """Create the parent directory and an empty database file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)


async def connect(path: str | os.PathLike[str]) -> aiosqlite.Connection:
    """Open the database with Fortress's pragmas; rows come back as sqlite3.Row."""
    db = await aiosqlite.connect(os.fspath(path), isolation_level=None)
    try:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout = 5000")
        # switching to WAL needs a moment alone with the file and does not wait on busy_timeout:
        # several processes opening a new database together retry briefly instead of failing
        for attempt in range(50):
            try:
                await db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        await db.execute("PRAGMA synchronous = NORMAL")
        await db.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        await db.close()  # its worker thread would otherwise keep the interpreter from exiting
        raise
    return db


_tx_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = weakref.WeakKeyDictionary()


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """One write transaction, taken up front (IMMEDIATE) so it never fails half-way on a lock.

    Tasks sharing one connection (the admin's request handlers) take turns: SQLite has one
    transaction per connection, so a second BEGIN would otherwise fail or merge two writes.
    """
    lock = _tx_locks.get(db)
    if lock is None:
        lock = _tx_locks[db] = asyncio.Lock()
    async with lock:
        try:
            # inside the try: a task cancelled while BEGIN is queued must still roll it back, or
            # the connection is left inside a transaction that nobody will finish
            await db.execute("BEGIN IMMEDIATE")
            yield db
        except BaseException:
            with contextlib.suppress(sqlite3.OperationalError):  # BEGIN itself may have failed
                await asyncio.shield(db.execute("ROLLBACK"))
            raise
        await db.execute("COMMIT")


async def schema_version(db: aiosqlite.Connection) -> int:
    """0 for an empty database, else the version recorded by migrate()."""
    async with db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'") as cur:
        if await cur.fetchone() is None:
            return 0
    async with db.execute("SELECT value FROM meta WHERE key = 'schema_version'") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(path: str | os.PathLike[str]) -> int:
    """Create or upgrade the database to the latest version; safe to run again or concurrently.

    Each migration runs in one IMMEDIATE transaction with its schema_version bump, so two processes
    starting together apply it once and a crash never leaves half a schema. Returns the version.
    """
    target = Path(path)
    _prepare_file(target)
    db = await connect(target)
    try:
        for version, file in migrations():
            async with transaction(db):
                if await schema_version(db) >= version:
                    continue
                for stmt in statements(file.read_text()):
                    await db.execute(stmt)
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
        return await schema_version(db)
    finally:
        await db.close()
