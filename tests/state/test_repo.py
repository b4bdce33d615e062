"""The repository against a real SQLite file: validation, audit rows, version bumps, secrets at rest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest

from fortress import keys as keyfmt
from fortress.config import BackendConfig
from fortress.passwords import verify_password
from fortress.state import repo
from fortress.state.load import read_config_version
from fortress.state.secretbox import SecretBox
from fortress.state.usage import UsageEvent, write_batch


async def _rows(db: aiosqlite.Connection, sql: str, *args: object) -> list[tuple]:
    async with db.execute(sql, args) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def test_user_lifecycle_audits_and_bumps_the_version(db: aiosqlite.Connection) -> None:
    v0 = await read_config_version(db)
    await repo.add_user(db, "alice", actor="root", ip="127.0.0.1")
    assert await read_config_version(db) == v0 + 1
    with pytest.raises(repo.RepoError, match="already exists"):
        await repo.add_user(db, "alice", actor="root")
    with pytest.raises(repo.RepoError, match="invalid user name"):
        await repo.add_user(db, "bad name", actor="root")
    await repo.create_key(db, "alice", actor="root")
    await repo.remove_user(db, "alice", actor="root")
    assert await repo.list_users(db) == []
    assert await _rows(db, "SELECT COUNT(*) FROM api_keys") == [(0,)]  # cascaded
    with pytest.raises(repo.RepoError, match="no such user"):
        await repo.remove_user(db, "alice", actor="root")
    audit = await _rows(db, "SELECT actor, ip, action, target, detail FROM audit ORDER BY id")
    assert [a[2] for a in audit] == ["user.add", "key.create", "user.remove"]
    assert audit[0][:2] == ("root", "127.0.0.1")
    assert audit[2][4] == "1 keys removed"


async def test_create_key_stores_only_the_hash(
    db: aiosqlite.Connection, db_bytes: Callable[[], bytes]
) -> None:
    await repo.add_user(db, "alice", actor="cli")
    full, row = await repo.create_key(
        db,
        "alice",
        actor="cli",
        rate="100/5m",
        tokens="1000/1h",
        max_concurrent=2,
        models="llama3*, qwen3:*",
        expires="30d",
        scope="admin",
        label="laptop",
    )
    key_id, secret = keyfmt.split(full)  # type: ignore[misc]
    assert row.id == key_id and row.user == "alice" and row.state == "active"
    assert (row.rate, row.tokens, row.max_concurrent, row.scope) == ("100/5m", "1000/1h", 2, "admin")
    assert row.models == "llama3*,qwen3:*"
    assert row.expires_at is not None and abs(row.expires_at - time.time() - 30 * 86400) < 5
    stored = await _rows(db, "SELECT secret_hash FROM api_keys WHERE id = ?", key_id)
    assert stored == [(keyfmt.hash_secret(secret),)]
    assert secret.encode() not in db_bytes()
    detail = (await _rows(db, "SELECT detail FROM audit WHERE action = 'key.create'"))[0][0]
    assert secret not in detail and full not in detail


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": "bad"}, "--rate: invalid limit"),
        ({"rate": "10/0m"}, "--rate"),
        ({"tokens": "5/xh"}, "--tokens"),
        ({"expires": "soon"}, "--expires"),
        ({"scope": "root"}, "invalid scope"),
        ({"models": "llama;rm"}, "invalid model pattern"),
        ({"max_concurrent": 0}, "--max-concurrent"),
        ({"label": "x\n"}, "label"),
    ],
)
async def test_create_key_rejects_bad_input(db: aiosqlite.Connection, kwargs: dict, message: str) -> None:
    await repo.add_user(db, "alice", actor="cli")
    with pytest.raises(repo.RepoError, match=message):
        await repo.create_key(db, "alice", actor="cli", **kwargs)
    assert await repo.list_keys(db) == []


async def test_revoked_is_final(db: aiosqlite.Connection) -> None:
    await repo.add_user(db, "alice", actor="cli")
    _, row = await repo.create_key(db, "alice", actor="cli")
    assert (await repo.set_key_state(db, row.id, "disabled", actor="cli")).state == "disabled"
    assert (await repo.set_key_state(db, f"fk_{row.id}_…", "active", actor="cli")).state == "active"
    v = await read_config_version(db)
    assert (await repo.set_key_state(db, row.id, "revoked", actor="cli")).state == "revoked"
    assert await read_config_version(db) == v + 1
    revoked_at = await _rows(db, "SELECT revoked_at FROM api_keys WHERE id = ?", row.id)
    assert revoked_at[0][0] == pytest.approx(time.time(), abs=5)
    with pytest.raises(repo.RepoError, match=f"key {row.id} is revoked and cannot be enabled"):
        await repo.set_key_state(db, row.id, "active", actor="cli")
    with pytest.raises(repo.RepoError, match="revoked and cannot be disabled"):
        await repo.set_key_state(db, row.id, "disabled", actor="cli")
    assert (await repo.get_key(db, row.id)).state == "revoked"
    actions = [a for (a,) in await _rows(db, "SELECT action FROM audit WHERE target = ?", row.id)]
    assert actions == ["key.create", "key.disable", "key.enable", "key.revoke"]
    with pytest.raises(repo.RepoError, match="no such key"):
        await repo.set_key_state(db, "zzzzzzzz", "disabled", actor="cli")


async def test_expired_is_derived(db: aiosqlite.Connection) -> None:
    await repo.add_user(db, "alice", actor="cli")
    _, row = await repo.create_key(db, "alice", actor="cli", expires="1s")
    await db.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (time.time() - 1, row.id))
    assert [k.state for k in await repo.list_keys(db, "alice")] == ["expired"]


async def test_backend_credential_is_encrypted_at_rest(
    db: aiosqlite.Connection, db_bytes: Callable[[], bytes], tmp_path: Path
) -> None:
    box = SecretBox(tmp_path / "elsewhere" / "secrets.key")
    credential = "sk-live-credential-0123456789"
    file_backends = (BackendConfig("local", "http://127.0.0.1:11434"),)
    await repo.add_backend(
        db,
        "gpu1",
        "http://10.0.0.1:11434/",
        actor="cli",
        credential=credential,
        box=box,
        file_backends=file_backends,
    )
    assert credential.encode() not in db_bytes()
    assert (tmp_path / "elsewhere" / "secrets.key").stat().st_mode & 0o777 == 0o600
    (enc,) = (await _rows(db, "SELECT credential_enc FROM backends"))[0]
    assert box.decrypt(enc) == credential
    rows = await repo.list_backends(db, file_backends)
    assert [(b.name, b.source, b.url, b.has_credential) for b in rows] == [
        ("local", "file", "http://127.0.0.1:11434", False),
        ("gpu1", "db", "http://10.0.0.1:11434", True),
    ]
    with pytest.raises(repo.RepoError, match=r"declared in config\.toml"):
        await repo.add_backend(db, "local", "http://x:1", actor="cli", file_backends=file_backends)
    with pytest.raises(repo.RepoError, match="already exists"):
        await repo.add_backend(db, "gpu1", "http://x:1", actor="cli")
    with pytest.raises(repo.RepoError, match="invalid backend URL"):
        await repo.add_backend(db, "gpu2", "ftp://x", actor="cli")
    await repo.remove_backend(db, "gpu1", actor="cli")
    with pytest.raises(repo.RepoError, match="no such backend"):
        await repo.remove_backend(db, "gpu1", actor="cli")


async def test_settings_are_validated_against_their_type(db: aiosqlite.Connection) -> None:
    await repo.set_setting(db, "limits.rate", '"60/1m"', actor="root")
    await repo.set_setting(db, "security.ip_deny", '["10.0.0.0/8"]', actor="root")
    assert await repo.get_settings(db) == {"limits.rate": '"60/1m"', "security.ip_deny": '["10.0.0.0/8"]'}
    for key, value, message in [
        ("limits.nope", "1", "unknown setting"),
        ("routing.retries", '"three"', "routing.retries"),
        ("limits.rate", '"fast"', "limits.rate"),
        ("security.ip_allow", "not json", "security.ip_allow"),
    ]:
        with pytest.raises(repo.RepoError, match=message):
            await repo.set_setting(db, key, value, actor="root")
    await repo.delete_setting(db, "limits.rate", actor="root")
    assert list(await repo.get_settings(db)) == ["security.ip_deny"]


async def test_admins(db: aiosqlite.Connection) -> None:
    await repo.add_admin(db, "root", "correct horse")
    with pytest.raises(repo.RepoError, match="already exists"):
        await repo.add_admin(db, "root", "another password")
    with pytest.raises(repo.RepoError, match="at least 8"):
        await repo.add_admin(db, "short", "1234567")
    await repo.set_admin_password(db, "root", "battery staple")
    (stored,) = (await _rows(db, "SELECT password_hash FROM admins WHERE name = 'root'"))[0]
    assert verify_password("battery staple", stored) and not verify_password("correct horse", stored)
    assert await repo.admin_names(db) == ["root"]


async def test_list_users_sums_usage_and_sorts(db: aiosqlite.Connection) -> None:
    for name in ("alice", "bob"):
        await repo.add_user(db, name, actor="cli")
    _, key = await repo.create_key(db, "bob", actor="cli")
    now = time.time()
    events = [
        UsageEvent(
            ts=now - i,
            request_id=str(i),
            key_id=key.id,
            user_name="bob",
            method="POST",
            path="/api/chat",
            status=200,
            duration_ms=5.0,
            prompt_eval_count=3,
            eval_count=4,
        )
        for i in range(10)
    ]
    await write_batch(db, events)
    users = await repo.list_users(db, "-requests")
    assert [(u.name, u.keys, u.requests, u.tokens) for u in users] == [("bob", 1, 10, 70), ("alice", 0, 0, 0)]
    assert users[0].last_activity == pytest.approx(now)
    assert [u.name for u in await repo.list_users(db, "name")] == ["alice", "bob"]
    with pytest.raises(repo.RepoError, match="cannot sort"):
        await repo.list_users(db, "password")


async def test_writers_sharing_one_connection_take_turns(db: aiosqlite.Connection) -> None:
    """The admin shares one connection between requests: concurrent writers must not collide."""
    names = [f"user{i}" for i in range(20)]
    results = await asyncio.gather(
        *(repo.add_user(db, n, actor="admin") for n in names),
        repo.add_user(db, "user3", actor="admin"),  # a failing writer in the middle rolls back alone
        return_exceptions=True,
    )
    assert [r for r in results if r is not None] and all(
        isinstance(r, repo.RepoError) for r in results if r is not None
    )
    assert sorted(u.name for u in await repo.list_users(db)) == sorted(names)
    assert await _rows(db, "SELECT COUNT(*) FROM audit WHERE action = 'user.add'") == [(20,)]
