"""The per-key `auto_models` field (CLI flag, column, migration, snapshot) and `[routing] auto_models`."""

from __future__ import annotations

import sqlite3
import tomllib
from contextlib import closing
from pathlib import Path

import pytest

from fortress import config
from fortress.state import db as dbmod
from fortress.state.load import load_snapshot
from tests.conftest import make_fortress


async def _snapshot_keys(path: Path, cfg_path: Path) -> dict:
    conn = await dbmod.connect(path)
    try:
        return (await load_snapshot(conn, config.load(str(cfg_path)))).keys
    finally:
        await conn.close()


async def test_key_create_auto_models_reaches_the_snapshot_and_the_listing(tmp_path: Path) -> None:
    f = make_fortress(tmp_path, [("local", "http://127.0.0.1:9")])
    f.cli("user", "add", "alice")
    narrowed = f.cli(
        "key", "create", "--user", "alice", "--auto-models", " qwen* , llama3.2:*,"
    ).stdout.strip()
    plain = f.cli("key", "create", "--user", "alice").stdout.strip()
    keys = await _snapshot_keys(f.db, f.config)
    assert keys[narrowed[3:11]].auto_models == ("qwen*", "llama3.2:*")
    assert keys[plain[3:11]].auto_models == ()

    listing = f.cli("key", "list").stdout.splitlines()
    column = listing[0].split().index("AUTO")
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows[narrowed[3:11]][column] == "qwen*,llama3.2:*"
    assert rows[plain[3:11]][column] == "-"
    with closing(sqlite3.connect(f.db)) as conn:
        (detail,) = conn.execute("SELECT detail FROM audit WHERE target = ?", (narrowed[3:11],)).fetchone()
    assert '"auto_models": "qwen*,llama3.2:*"' in detail


def test_a_bad_auto_models_pattern_is_refused_in_one_line(tmp_path: Path) -> None:
    f = make_fortress(tmp_path, [("local", "http://127.0.0.1:9")])
    f.cli("user", "add", "alice")
    res = f.cli("key", "create", "--user", "alice", "--auto-models", "qwen*,bad pattern!", check=False)
    assert res.returncode != 0 and res.stdout == ""
    assert "invalid model pattern 'bad pattern!'" in res.stderr and res.stderr.count("\n") == 1
    with closing(sqlite3.connect(f.db)) as conn:
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone() == (0,)


async def test_the_migration_keeps_existing_keys(tmp_path: Path) -> None:
    """A database from before the column: its keys survive and read as 'no narrowing'."""
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(dbmod.SCHEMA_FILE.read_text())
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        conn.execute("INSERT INTO users (name, created_at) VALUES ('bob', 0)")
        conn.execute(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at) VALUES ('abcdefgh', 1, 'x', 0)"
        )
        conn.commit()
    assert await dbmod.migrate(path) == dbmod.latest_version()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT id, auto_models FROM api_keys").fetchall() == [("abcdefgh", "")]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", ()),
        ('auto_models = ["qwen3*", "llama*"]', ("qwen3*", "llama*")),
        ('auto_models = "qwen*"', config.ConfigError("routing.auto_models: expected a list of strings")),
        ('auto_models = ["qwen*", " "]', config.ConfigError(r"routing.auto_models\[1\]: empty pattern")),
    ],
)
def test_routing_auto_models_setting(line: str, expected: tuple[str, ...] | Exception) -> None:
    data = tomllib.loads(f"[routing]\n{line}\n")
    if isinstance(expected, Exception):
        with pytest.raises(config.ConfigError, match=str(expected)):
            config.parse(data)
    else:
        assert config.parse(data).routing.auto_models == expected
