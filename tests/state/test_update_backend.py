"""repo.update_backend on a real SQLite file: partial edits, credential replace/clear, audit, refusals."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import aiosqlite
import pytest

from fortress.config import BackendConfig
from fortress.state import repo
from fortress.state.load import read_config_version
from fortress.state.secretbox import SecretBox

FILE_BACKENDS = (BackendConfig("local", "http://127.0.0.1:11434"),)


async def _row(db: aiosqlite.Connection, name: str = "gpu1") -> tuple:
    async with db.execute(
        "SELECT url, type, weight, models, max_concurrent, credential_enc FROM backends WHERE name = ?",
        (name,),
    ) as cur:
        row = await cur.fetchone()
    assert row is not None
    return tuple(row)


async def _audits(db: aiosqlite.Connection) -> list[tuple]:
    async with db.execute(
        "SELECT actor, ip, target, detail FROM audit WHERE action = 'backend.update' ORDER BY id"
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


@pytest.fixture
def box(tmp_path: Path) -> SecretBox:
    return SecretBox(tmp_path / "secrets.key")


@pytest.fixture
async def gpu1(db: aiosqlite.Connection, box: SecretBox) -> None:
    await repo.add_backend(
        db, "gpu1", "http://10.0.0.1:11434", actor="cli", weight=2, credential="old-secret", box=box
    )


async def test_only_given_fields_change_and_one_audit_row_says_which(
    db: aiosqlite.Connection, box: SecretBox, gpu1: None
) -> None:
    v0 = await read_config_version(db)
    await repo.update_backend(
        db, "gpu1", actor="root", ip="127.0.0.1", url="http://10.0.0.2:11434/", weight=5, box=box
    )
    url, type_, weight, models, max_concurrent, enc = await _row(db)
    assert (url, type_, weight, models, max_concurrent) == ("http://10.0.0.2:11434", "ollama", 5, "", 0)
    assert box.decrypt(enc) == "old-secret"  # None = keep
    assert await read_config_version(db) == v0 + 1
    ((actor, ip, target, detail),) = await _audits(db)
    assert (actor, ip, target) == ("root", "127.0.0.1", "gpu1")
    assert json.loads(detail) == {"url": "http://10.0.0.2:11434", "weight": 5}

    await repo.update_backend(db, "gpu1", actor="root", type="openai", models="gpt-4o, o3", max_concurrent=3)
    assert (await _row(db))[1:5] == ("openai", 5, "gpt-4o,o3", 3)
    assert json.loads((await _audits(db))[-1][3]) == {
        "type": "openai",
        "models": "gpt-4o,o3",
        "max_concurrent": 3,
    }


async def test_a_save_that_changes_nothing_writes_nothing(
    db: aiosqlite.Connection, box: SecretBox, gpu1: None
) -> None:
    v0 = await read_config_version(db)
    await repo.update_backend(
        db, "gpu1", actor="root", url="http://10.0.0.1:11434", weight=2, models="", box=box
    )
    await repo.update_backend(db, "gpu1", actor="root", box=box)
    assert await read_config_version(db) == v0
    assert await _audits(db) == []


async def test_credential_is_replaced_encrypted_or_cleared_and_never_audited(
    db: aiosqlite.Connection, box: SecretBox, gpu1: None, db_bytes: Callable[[], bytes]
) -> None:
    await repo.update_backend(db, "gpu1", actor="root", credential="new-secret-value", box=box)
    enc = (await _row(db))[5]
    assert box.decrypt(enc) == "new-secret-value"
    assert b"new-secret-value" not in db_bytes()
    await repo.update_backend(db, "gpu1", actor="root", credential="", box=box)
    assert (await _row(db))[5] is None
    assert not (await repo.list_backends(db))[0].has_credential
    details = [json.loads(a[3]) for a in await _audits(db)]
    assert details == [{"credential": "replaced"}, {"credential": "removed"}]
    await repo.update_backend(db, "gpu1", actor="root", credential="", box=box)  # already none: no-op
    assert len(await _audits(db)) == 2


async def test_bad_values_file_backends_and_unknown_names_are_refused_without_a_write(
    db: aiosqlite.Connection, box: SecretBox, gpu1: None
) -> None:
    before = await _row(db)
    cases = [
        ({"url": "ftp://x"}, "invalid backend URL"),
        ({"weight": 0}, "weight: must be a positive integer"),
        ({"max_concurrent": -1}, "max_concurrent"),
        ({"type": "vllm"}, "invalid backend type"),
        ({"models": "bad model!"}, "invalid model pattern"),
    ]
    for change, message in cases:
        with pytest.raises(repo.RepoError, match=message):
            await repo.update_backend(db, "gpu1", actor="root", box=box, **change)  # type: ignore[arg-type]
    with pytest.raises(repo.RepoError, match=r"declared in config\.toml"):
        await repo.update_backend(db, "local", actor="root", weight=3, file_backends=FILE_BACKENDS)
    with pytest.raises(repo.RepoError, match="no such backend 'nope'"):
        await repo.update_backend(db, "nope", actor="root", weight=3)
    assert await _row(db) == before
    assert await _audits(db) == []
