"""The `search` key scope: the migration that allows it, the CLI, and who may use the web search routes."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from fortress import keys as keyfmt
from fortress.config import Config
from fortress.http.replies import LocalReply
from fortress.pipeline.chain import Admit, Compiled, Gate
from fortress.state import db as dbmod
from fortress.state.snapshot import KeyRecord, Policy, Snapshot
from tests.conftest import make_fortress


def _apply(conn: sqlite3.Connection, up_to: int) -> None:
    for version, file in dbmod.migrations():
        if version <= up_to:
            for statement in dbmod.statements(file.read_text()):
                conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(up_to),))


async def test_the_migration_keeps_keys_playground_keys_and_the_triggers(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        _apply(conn, 6)
        conn.execute("INSERT INTO users (name, created_at) VALUES ('bob', 0)")
        conn.execute("INSERT INTO admins (name, password_hash, created_at) VALUES ('root', 'x', 0)")
        conn.execute(
            "INSERT INTO api_keys (id, user_id, secret_hash, scope, models, auto_models, created_at)"
            " VALUES ('abcdefgh', 1, 'h1', 'admin', 'qwen*', 'qwen3*', 5)"
        )
        conn.execute(
            "INSERT INTO api_keys (id, user_id, secret_hash, created_at) VALUES ('ijklmnop', 1, 'h2', 6)"
        )
        conn.execute(
            "INSERT INTO playground_keys (admin_name, key_id, secret_enc, created_at)"
            " VALUES ('root', 'ijklmnop', x'01', 7)"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE api_keys SET scope = 'search' WHERE id = 'ijklmnop'")
        conn.commit()

    assert await dbmod.migrate(path) == dbmod.latest_version()

    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA foreign_keys = ON")
        assert conn.execute(
            "SELECT id, scope, models, auto_models, created_at FROM api_keys ORDER BY id"
        ).fetchall() == [("abcdefgh", "admin", "qwen*", "qwen3*", 5.0), ("ijklmnop", "user", "", "", 6.0)]
        assert conn.execute("SELECT admin_name, key_id FROM playground_keys").fetchall() == [
            ("root", "ijklmnop")
        ]
        version = int(conn.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])
        conn.execute("UPDATE api_keys SET scope = 'search' WHERE id = 'ijklmnop'")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE api_keys SET scope = 'root' WHERE id = 'ijklmnop'")
        assert (
            int(conn.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])
            == version + 1
        )
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'api_keys_user'").fetchone()
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute(
            "DELETE FROM users WHERE name = 'bob'"
        )  # the cascades still reach keys and playground keys
        assert conn.execute("SELECT COUNT(*) FROM api_keys").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM playground_keys").fetchone() == (0,)


def test_the_cli_gives_and_lists_the_search_scope(tmp_path: Path) -> None:
    f = make_fortress(tmp_path, [("local", "http://127.0.0.1:9")])
    f.cli("user", "add", "alice")
    key = f.cli("key", "create", "--user", "alice", "--scope", "search").stdout.strip()
    listing = f.cli("key", "list").stdout.splitlines()
    column = listing[0].split().index("SCOPE")
    assert [line.split()[column] for line in listing[1:] if line.startswith(key[3:11])] == ["search"]
    bad = f.cli("key", "create", "--user", "alice", "--scope", "root", check=False)
    assert bad.returncode != 0 and "invalid choice: 'root'" in bad.stderr


def _gate(search: bool) -> tuple[Gate, dict[str, str]]:
    """A gate with one real key per scope; scope -> the full key."""
    keys: dict[str, KeyRecord] = {}
    full: dict[str, str] = {}
    for scope in ("user", "search", "admin"):
        full[scope], key_id, secret_hash = keyfmt.generate()
        keys[key_id] = KeyRecord(key_id, "alice", secret_hash, scope=scope)
    snapshot = Snapshot(1, keys, (), Policy.build(Config(), {}))
    return Gate(Compiled.build(snapshot, (), search=search)), full


@pytest.mark.parametrize("path", ["/api/web_search", "/api/web_fetch"])
@pytest.mark.parametrize(("scope", "status"), [("user", 403), ("search", None), ("admin", None)])
def test_search_and_admin_scopes_may_search(path: str, scope: str, status: int | None) -> None:
    gate, full = _gate(search=True)
    result = gate.head(b"POST", path, "", f"Bearer {full[scope]}".encode(), None, "127.0.0.1", 0.0)
    if status is None:
        assert isinstance(result, Admit) and result.route.name == path
    else:
        assert isinstance(result, LocalReply) and result.status == status
        assert b"needs a key with the search scope" in result.body


def test_the_routes_do_not_exist_until_search_is_configured() -> None:
    gate, _ = _gate(search=False)
    result = gate.head(b"POST", "/api/web_search", "", None, None, "127.0.0.1", 0.0)
    assert isinstance(result, LocalReply) and result.status == 404  # before asking for a key
    assert json.loads(result.body) == {"error": "path /api/web_search not found"}
