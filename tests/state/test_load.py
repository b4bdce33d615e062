"""Snapshot loading: keys, file then database backends with their credentials, policy overrides."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from fortress import keys as keyfmt
from fortress.config import BackendConfig, Config, DatabaseConfig
from fortress.state import repo
from fortress.state.load import load_snapshot, read_config_version
from fortress.state.secretbox import for_config


@pytest.fixture
def cfg(db_path: Path) -> Config:
    return Config(
        database=DatabaseConfig(str(db_path)),
        backends=(
            BackendConfig("local", "http://127.0.0.1:11434/", credential_env="FORTRESS_TEST_LOCAL_TOKEN"),
            BackendConfig("shadowed", "http://127.0.0.1:1"),
        ),
    )


async def test_snapshot_holds_keys_backends_and_policy(
    db: aiosqlite.Connection, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORTRESS_TEST_LOCAL_TOKEN", "env-token")
    await repo.add_user(db, "alice", actor="cli")
    full, row = await repo.create_key(
        db, "alice", actor="cli", rate="100/5m", tokens="5000/1d", models="llama*,qwen3:8b", label="ci"
    )
    _, other = await repo.create_key(db, "alice", actor="cli")
    await repo.set_key_state(db, other.id, "revoked", actor="cli")
    await repo.add_backend(
        db, "gpu", "http://10.1.1.1:11434", actor="cli", credential="db-token", box=for_config(cfg), weight=3
    )
    await db.execute(  # a row that config.toml shadows, written behind the repository's back
        "INSERT INTO backends (name, url, created_at) VALUES ('shadowed', 'http://10.9.9.9:1', 0)"
    )
    await repo.set_setting(db, "limits.rate", '"60/1m"', actor="cli")
    await repo.set_setting(db, "security.ip_deny", '["10.0.0.0/8"]', actor="cli")

    snap = await load_snapshot(db, cfg)
    assert snap.version == await read_config_version(db)
    rec = snap.keys[row.id]
    assert rec.user == "alice" and rec.label == "ci" and rec.state == "active"
    assert keyfmt.matches(keyfmt.split(full)[1], rec.secret_hash)  # type: ignore[index]
    assert (rec.rate, rec.tokens, rec.models) == ((100, 300), (5000, 86400), ("llama*", "qwen3:8b"))
    assert snap.keys[other.id].state == "revoked" and snap.keys[other.id].rate is None
    assert [(b.name, b.source, b.url, b.credential, b.weight) for b in snap.backends] == [
        ("local", "file", "http://127.0.0.1:11434", "env-token", 1),
        ("shadowed", "file", "http://127.0.0.1:1", "", 1),
        ("gpu", "db", "http://10.1.1.1:11434", "db-token", 3),
    ]
    assert "db-token" not in repr(snap.backends)
    assert snap.policy is not None
    assert snap.policy.default_rate == (60, 60) and snap.policy.security.ip_deny == ("10.0.0.0/8",)


async def test_version_moves_on_every_configuration_write(db: aiosqlite.Connection, cfg: Config) -> None:
    seen = [await read_config_version(db)]
    await repo.add_user(db, "bob", actor="cli")
    seen.append(await read_config_version(db))
    _, key = await repo.create_key(db, "bob", actor="cli")
    seen.append(await read_config_version(db))
    await repo.set_key_state(db, key.id, "disabled", actor="cli")
    seen.append(await read_config_version(db))
    await repo.add_backend(db, "b", "http://127.0.0.1:2", actor="cli")
    seen.append(await read_config_version(db))
    await repo.set_setting(db, "routing.retries", "1", actor="cli")
    seen.append(await read_config_version(db))
    assert seen == sorted(set(seen)) and len(seen) == 6
    assert (await load_snapshot(db, cfg)).version == seen[-1]
