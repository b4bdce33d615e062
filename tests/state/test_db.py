"""Opening and migrating the database: pragmas, file mode, idempotence, concurrent starts."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

import pytest

from fortress.state import db as dbmod


async def test_migrate_creates_a_private_wal_database(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "fortress.db"
    assert await dbmod.migrate(path) == dbmod.latest_version() >= 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = await dbmod.connect(path)
    try:
        pragmas = {}
        for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys"):
            async with conn.execute(f"PRAGMA {name}") as cur:
                pragmas[name] = (await cur.fetchone())[0]
        assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
        async with conn.execute("SELECT key, value FROM meta ORDER BY key") as cur:
            assert [tuple(r) for r in await cur.fetchall()] == [
                ("config_version", "1"),
                ("schema_version", str(dbmod.latest_version())),
            ]
        async with conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'") as cur:
            # 14 config_version bumps, ending admin sessions, ending a key's IP trust sessions
            assert (await cur.fetchone())[0] == 16
    finally:
        await conn.close()


async def test_migrate_twice_and_concurrently_applies_once(tmp_path: Path) -> None:
    path = tmp_path / "fortress.db"
    latest = dbmod.latest_version()
    versions = await asyncio.gather(*(dbmod.migrate(path) for _ in range(4)))
    assert versions == [latest] * 4
    assert await dbmod.migrate(path) == latest
    conn = await dbmod.connect(path)
    try:
        async with conn.execute("SELECT value FROM meta WHERE key = 'config_version'") as cur:
            assert (await cur.fetchone())[0] == "1"  # the schema's INSERT ran exactly once
    finally:
        await conn.close()


async def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    path = tmp_path / "fortress.db"
    await dbmod.migrate(path)
    conn = await dbmod.connect(path)
    try:
        with pytest.raises(RuntimeError):
            async with dbmod.transaction(conn):
                await conn.execute("INSERT INTO users (name, created_at) VALUES ('x', 0)")
                raise RuntimeError("boom")
        async with conn.execute("SELECT COUNT(*) FROM users") as cur:
            assert (await cur.fetchone())[0] == 0
    finally:
        await conn.close()


def test_statements_keeps_trigger_bodies_whole() -> None:
    script = """-- a comment
CREATE TABLE t (a);
CREATE TRIGGER tr AFTER INSERT ON t BEGIN
    UPDATE t SET a = 1; UPDATE t SET a = 2; END;
"""
    out = dbmod.statements(script)
    assert len(out) == 2
    assert out[1].startswith("CREATE TRIGGER") and out[1].endswith("END;")
    with pytest.raises(ValueError, match="incomplete"):
        dbmod.statements("CREATE TABLE x (a")


async def test_backend_types_are_the_registry_s_to_check_and_rows_survive_migration_10(
    tmp_path: Path,
) -> None:
    """Migration 10 drops the fixed list of backend types: a database made before it keeps its backends and
    their config_version triggers, and takes a type that only the kinds registry knows."""
    path = tmp_path / "fortress.db"
    with sqlite3.connect(path) as conn:  # the schema as it was at version 9
        for version, file in dbmod.migrations()[:9]:
            for stmt in dbmod.statements(file.read_text()):
                conn.execute(stmt)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
        conn.execute(
            "INSERT INTO backends (name, url, type, models, credential_enc, created_at)"
            " VALUES ('prov', 'https://api.example.com/v1', 'openai', 'gpt-4o', x'0102', 1.5)"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO backends (name, url, type, created_at) VALUES ('x', 'u', 'other', 0)")
    assert await dbmod.migrate(path) == dbmod.latest_version() >= 10
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT name, url, type, models, credential_enc, created_at FROM backends"
        ).fetchall()
        assert rows == [("prov", "https://api.example.com/v1", "openai", "gpt-4o", b"\x01\x02", 1.5)]
        before = int(conn.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])
        with conn:
            conn.execute("INSERT INTO backends (name, url, type, created_at) VALUES ('x', 'u', 'other', 0)")
            conn.execute("UPDATE backends SET weight = 2 WHERE name = 'x'")
            conn.execute("DELETE FROM backends WHERE name = 'x'")
        after = int(conn.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])
        assert after == before + 3
