"""Fixtures: a real, migrated SQLite file in a temporary directory and a connection to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiosqlite
import pytest

from fortress.state import db as dbmod


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "fortress.db"


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    await dbmod.migrate(db_path)
    conn = await dbmod.connect(db_path)
    yield conn
    await conn.close()


@pytest.fixture
def db_bytes(db_path: Path) -> Callable[[], bytes]:
    """Everything SQLite keeps on disk for this database: the main file, its WAL and shared memory."""
    return lambda: b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
