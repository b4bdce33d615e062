"""The published snapshot's codec: exact round trip, sealed credentials, clear errors, tolerant reading."""

from __future__ import annotations

import json
import tempfile
import zlib
from dataclasses import fields
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.cluster.codec import (
    FORMAT,
    SnapshotError,
    decode,
    encode,
    tag_of,
    version_of,
)
from fortress.config import BackendConfig, Config, DatabaseConfig, LimitsConfig, RoutingConfig, SecurityConfig
from fortress.state import db as dbmod
from fortress.state import repo
from fortress.state.load import load_snapshot
from fortress.state.secretbox import SecretBox, for_config
from fortress.state.snapshot import BackendRecord, KeyRecord, Policy, Snapshot

BOX = SecretBox(Path(tempfile.mkdtemp(prefix="fortress-codec-")) / "secrets.key")

# SQLite holds UTF-8, so no lone surrogates
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
names = st.lists(text, max_size=4).map(tuple)
rates = st.none() | st.tuples(st.integers(1, 10**9), st.integers(1, 10**7))
small = st.none() | st.integers(0, 2**40)
floats = st.floats(allow_nan=False)

keys = st.builds(
    KeyRecord,
    id=text,
    user=text,
    secret_hash=text,
    state=st.sampled_from(["active", "disabled", "revoked"]),
    scope=st.sampled_from(["user", "admin"]),
    models=names,
    rate=rates,
    tokens=rates,
    max_concurrent=small,
    max_num_ctx=small,
    max_num_predict=small,
    max_keep_alive_s=small,
    expires_at=st.none() | floats,
    label=text,
    auto_models=names,
)
backends = st.builds(
    BackendRecord,
    name=text,
    url=text,
    type=st.sampled_from(["ollama", "openai"]),
    weight=st.integers(0, 1000),
    models=names,
    credential=text,
    max_concurrent=st.integers(0, 1000),
    ca_bundle=text,
    source=st.sampled_from(["file", "db"]),
    capabilities=names,
)
policies = st.builds(
    Policy,
    security=st.builds(SecurityConfig, auth_fail_window_s=floats, auth_lockout_s=floats),
    limits=st.builds(LimitsConfig),
    routing=st.builds(RoutingConfig, backoff_base_ms=floats | st.integers(0, 10**6)),
    default_rate=rates,
    default_tokens=rates,
)
snapshots = st.builds(
    Snapshot,
    version=st.integers(0, 2**62),
    keys=st.lists(keys, max_size=8).map(lambda ks: {k.id: k for k in ks}),
    backends=st.lists(backends, max_size=4).map(tuple),
    policy=st.none() | policies,
)


@settings(max_examples=150, deadline=None)
@given(snapshots, st.dictionaries(text, text, max_size=5), floats)
def test_round_trip_is_exact(snapshot: Snapshot, rows: dict[str, str], now: float) -> None:
    blob = encode(snapshot, rows, BOX, now=now)
    back = decode(blob, BOX)
    assert back.snapshot == snapshot
    assert back.settings == rows
    assert back.published_at == now
    assert back.problems == ()
    # types survive too (an int where a float field holds one, tuples not lists), not only equality
    assert repr(back.snapshot.keys) == repr(snapshot.keys)
    assert repr(back.snapshot.policy) == repr(snapshot.policy)


def test_the_codec_carries_every_field_of_a_snapshot() -> None:
    """A field added to Snapshot must be added to the codec too (records and Policy follow by themselves)."""
    assert [f.name for f in fields(Snapshot)] == ["version", "keys", "backends", "policy", "trust"]


def _snapshot(credential: str = "sk-live-0123456789abcdef") -> Snapshot:
    policy = Policy.build(Config(), {})
    return Snapshot(
        version=7,
        keys={"abcd1234": KeyRecord("abcd1234", "alice", "h" * 64, rate=(5, 10), models=("llama*",))},
        backends=(BackendRecord("paid", "https://api.example.com/v1", "openai", credential=credential),),
        policy=policy,
        trust={"192.0.2.7": ("abcd1234", 1_900_000_000.5)},
    )


def test_credentials_are_sealed_in_the_bytes() -> None:
    blob = encode(_snapshot(), {}, BOX)
    assert b"sk-live" not in blob
    assert b"sk-live" not in zlib.decompress(blob)
    assert decode(blob, BOX).snapshot.backends[0].credential == "sk-live-0123456789abcdef"


def test_a_node_without_the_key_file_gets_the_rest_and_a_clear_problem(tmp_path: Path) -> None:
    missing = SecretBox(tmp_path / "secrets.key")
    back = decode(encode(_snapshot(), {}, BOX), missing)
    assert back.snapshot.keys == _snapshot().keys  # a revocation still applies
    assert back.snapshot.backends[0].credential == ""
    (problem,) = back.problems
    assert "backend paid" in problem and "copy it from the control node" in problem
    assert not (tmp_path / "secrets.key").exists()  # decoding never creates a key


def test_a_node_with_another_key_file_is_told_so(tmp_path: Path) -> None:
    other = SecretBox(tmp_path / "secrets.key")
    other.encrypt("x")  # creates a different key
    back = decode(encode(_snapshot(), {}, BOX), other)
    assert back.snapshot.backends[0].credential == ""
    assert "control node's key file" in back.problems[0]
    assert "sk-live" not in back.problems[0]


def test_no_credential_needs_no_key_file(tmp_path: Path) -> None:
    back = decode(encode(_snapshot(credential=""), {}, BOX), SecretBox(tmp_path / "secrets.key"))
    assert back.problems == () and back.snapshot == _snapshot(credential="")


def _payload(blob: bytes) -> dict:
    return json.loads(zlib.decompress(blob))


def _blob(payload: dict) -> bytes:
    return zlib.compress(json.dumps(payload).encode())


def test_newer_and_older_fields_are_tolerated() -> None:
    payload = _payload(encode(_snapshot(), {}, BOX))
    payload["key_fields"].append("colour")  # a field a newer control node added
    payload["keys"][0].append("blue")
    drop = payload["key_fields"].index("label")  # a field an older control node did not have
    del payload["key_fields"][drop], payload["keys"][0][drop]
    payload["policy"]["routing"]["future_knob"] = 3
    back = decode(_blob(payload), BOX).snapshot
    assert back.keys["abcd1234"] == _snapshot().keys["abcd1234"]  # label took its default, ""
    assert back.policy == _snapshot().policy


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: b"not zlib at all", "not a Fortress snapshot"),
        (lambda p: zlib.compress(b"[1, 2]"), "no format field"),
        (lambda p: _blob({**p, "format": FORMAT + 1}), "same Fortress version"),
        (lambda p: _blob({**p, "keys": [["only-one-value"]]}), "1 values for"),
        (
            lambda p: _blob({**p, "key_fields": ["id"], "keys": [["x"]]}),
            "KeyRecord without user, secret_hash",
        ),
        (lambda p: _blob({**p, "settings": {"a": 1}}), "settings must map"),
        (lambda p: _blob({k: v for k, v in p.items() if k != "policy"}), "malformed snapshot: KeyError"),
    ],
)
def test_bad_bytes_give_a_clear_error(damage, message: str) -> None:  # type: ignore[no-untyped-def]
    payload = _payload(encode(_snapshot(), {}, BOX))
    with pytest.raises(SnapshotError, match=message):
        decode(damage(payload), BOX)


def test_tag_names_the_version_and_the_bytes() -> None:
    a, b = encode(_snapshot(), {}, BOX), encode(_snapshot(), {}, BOX)
    assert version_of(tag_of(7, a)) == 7
    assert tag_of(7, a) != tag_of(7, b)  # sealing is randomised: a republication is seen as one
    assert tag_of(7, a) == tag_of(7, a)


async def test_a_snapshot_loaded_from_sqlite_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORTRESS_CODEC_TOKEN", "file-secret")
    db_path = tmp_path / "data" / "fortress.db"
    cfg = Config(
        database=DatabaseConfig(str(db_path)),
        backends=(BackendConfig("local", "http://127.0.0.1:11434", credential_env="FORTRESS_CODEC_TOKEN"),),
    )
    await dbmod.migrate(db_path)
    db: aiosqlite.Connection = await dbmod.connect(db_path)
    try:
        box = for_config(cfg)
        await repo.add_user(db, "alice", actor="test")
        await repo.create_key(db, "alice", actor="test", rate="5/10s", models="llama*", expires="30d")
        await repo.add_backend(
            db, "gpu", "http://10.0.0.2:11434", actor="test", credential="db-secret", box=box
        )
        await repo.set_setting(db, "security.ip_deny", '["10.9.0.0/16"]', actor="test")
        snapshot = await load_snapshot(db, cfg)
        rows = await repo.get_settings(db)
    finally:
        await db.close()
    blob = encode(snapshot, rows, box)
    assert b"file-secret" not in zlib.decompress(blob) and b"db-secret" not in zlib.decompress(blob)
    back = decode(blob, box)
    assert back.snapshot == snapshot and back.settings == rows
    assert {b.name: b.credential for b in back.snapshot.backends} == {
        "local": "file-secret",
        "gpu": "db-secret",
    }
