"""Configuration fan-out: the control node publishes, nodes follow, through a real Redis and a real SQLite.

The control node runs in-process here (fortress.cluster.control.run, the real loop); test_processes.py
runs it as its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiosqlite
import pytest

from fortress.cluster import control
from fortress.cluster.codec import Decoded, encode, tag_of
from fortress.cluster.lease import Lease
from fortress.cluster.link import SNAPSHOT, SNAPSHOT_TAG, async_client
from fortress.cluster.subscriber import NoSnapshot, Subscriber
from fortress.config import BackendConfig, Config
from fortress.state import repo
from fortress.state.load import load_snapshot, read_config_version
from fortress.state.secretbox import SecretBox, for_config, key_file_for

from .conftest import RedisServer, fanout_latencies, report, wait_until


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[None]:
    """The control node's cluster loop, in this process."""
    stop = asyncio.Event()
    task = asyncio.create_task(control.run(cfg, stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


@contextlib.asynccontextmanager
async def node(cfg: Config, poll_s: float = 0.5, cache: Path | None = None) -> AsyncIterator[Subscriber]:
    """A node's subscriber, holding a copy of the control node's key file, as the README says to."""
    client = async_client(cfg.cluster.redis_url)
    sub = Subscriber(client, SecretBox(key_file_for(cfg)), poll_s=poll_s, cache=cache)
    try:
        yield sub
    finally:
        await sub.aclose()
        await client.aclose()


async def test_a_change_on_the_control_node_reaches_a_node_fast(
    control_db: tuple[Config, aiosqlite.Connection],
) -> None:
    cfg, db = control_db
    async with running(cfg), node(cfg) as sub:
        await sub.start(timeout_s=10)
        latencies = await fanout_latencies(db, sub, changes=20)
        assert sub.current.snapshot == await load_snapshot(db, cfg)  # type: ignore[union-attr]
    print(report("control in this process", latencies))
    assert max(latencies) < 5  # the target is well under 1 s; the bound is loose for a busy machine


async def test_a_missed_notice_is_caught_by_the_poll(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer
) -> None:
    cfg, db = control_db
    box = for_config(cfg)
    raw = redis_server.client()

    async def publish_silently() -> int:  # what a lost pub/sub message looks like to a node
        snapshot = await load_snapshot(db, cfg)
        blob = encode(snapshot, {}, box)
        raw.mset({SNAPSHOT: blob, SNAPSHOT_TAG: tag_of(snapshot.version, blob)})
        return snapshot.version

    await publish_silently()
    async with node(cfg, poll_s=0.2) as sub:
        await sub.start(timeout_s=5)
        await repo.add_user(db, "bob", actor="test")
        version = await publish_silently()
        await wait_until(lambda: sub.version == version, what="the poll to find the new tag")


async def test_redis_down_the_node_serves_on_then_catches_up(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer
) -> None:
    cfg, db = control_db
    await repo.add_user(db, "carol", actor="test")
    _, key = await repo.create_key(db, "carol", actor="test")
    async with running(cfg), node(cfg, poll_s=0.1) as sub:
        await sub.start(timeout_s=10)
        before = sub.current
        assert sub.connected and sub.status()["redis"] == "up"

        redis_server.stop(kill=True)
        await wait_until(lambda: not sub.connected, what="the node to notice Redis is gone")
        status = sub.status()
        assert status["redis"] == "down" and status["snapshot_version"] == before.snapshot.version  # type: ignore[union-attr]
        assert status["error"] and sub.current is before  # still serving the last snapshot
        await repo.set_key_state(db, key.id, "revoked", actor="test")  # the admin works on meanwhile

        redis_server.start()  # an empty Redis: no persistence
        version = await read_config_version(db)
        await wait_until(lambda: sub.version == version, timeout=15, what="the republished snapshot")
        assert sub.connected and sub.current.snapshot.keys[key.id].state == "revoked"  # type: ignore[union-attr]


async def test_a_node_starting_without_a_snapshot_says_why(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer
) -> None:
    cfg, _ = control_db
    async with node(cfg) as sub:
        with pytest.raises(NoSnapshot, match=r"Redis holds no snapshot.*control node"):
            await sub.start(timeout_s=0.5)
    redis_server.stop()
    async with node(cfg) as sub:
        with pytest.raises(NoSnapshot, match="Redis is unreachable"):
            await sub.start(timeout_s=0.5)


async def test_the_cache_lets_a_node_start_while_redis_is_down(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer, tmp_path: Path
) -> None:
    cfg, db = control_db
    cache = tmp_path / "node" / "snapshot.cache"
    await repo.add_user(db, "dave", actor="test")
    async with running(cfg), node(cfg, cache=cache) as sub:
        first = await sub.start(timeout_s=10)
    assert cache.stat().st_mode & 0o777 == 0o600
    assert b"dave" not in cache.read_bytes()  # compressed and, for credentials, sealed as in Redis
    redis_server.stop()
    async with node(cfg, cache=cache) as sub:
        taken = await sub.start(timeout_s=1)
        assert taken.snapshot == first.snapshot and not sub.connected


async def test_an_unreadable_snapshot_leaves_the_last_one_in_force(
    control_db: tuple[Config, aiosqlite.Connection],
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg, db = control_db
    raw = redis_server.client()
    async with running(cfg), node(cfg, poll_s=0.1) as sub:
        good = await sub.start(timeout_s=10)
    caplog.set_level(logging.ERROR, "fortress.cluster")
    async with node(cfg, poll_s=0.1) as sub:
        await sub.start(timeout_s=5)
        raw.mset({SNAPSHOT: zlib.compress(b'{"format": 99}'), SNAPSHOT_TAG: "999.bad"})
        await wait_until(lambda: sub.error, what="the node to reject the snapshot")
        assert "same Fortress version" in sub.error and sub.current.snapshot == good.snapshot  # type: ignore[union-attr]
        assert sum("same Fortress version" in r.message for r in caplog.records) == 1  # once, not every poll
        await asyncio.sleep(0.5)
        assert sum("same Fortress version" in r.message for r in caplog.records) == 1
        async with running(cfg):  # the control node puts its own snapshot back
            await wait_until(lambda: not sub.error, what="the control node's snapshot again")
        assert sub.current.snapshot == good.snapshot  # type: ignore[union-attr]
        assert db is not None


async def test_a_restarted_control_node_republishes_a_changed_config_toml(
    control_db: tuple[Config, aiosqlite.Connection],
) -> None:
    cfg, _ = control_db
    seen: list[Decoded] = []
    async with running(cfg), node(cfg, poll_s=0.1) as sub:
        sub.on_change = seen.append
        await sub.start(timeout_s=10)
        assert sub.current.snapshot.backends == ()  # type: ignore[union-attr]
    more = replace(cfg, backends=(BackendConfig("gpu", "http://10.0.0.9:11434"),))
    async with node(cfg, poll_s=0.1) as sub:
        await sub.start(timeout_s=10)
        async with running(more):  # same database version, other config.toml
            await wait_until(lambda: sub.current.snapshot.backends, what="the new file backend")  # type: ignore[union-attr]
        assert [b.name for b in sub.current.snapshot.backends] == ["gpu"]  # type: ignore[union-attr]


async def test_only_one_control_node_holds_the_lease(redis_server: RedisServer) -> None:
    client = async_client(redis_server.url)
    try:
        first, second = Lease(client, "one", ttl_s=2.0), Lease(client, "two", ttl_s=30)
        assert await first.keep() and not await second.keep()
        assert second.holder == "one"
        assert await Lease(client, "one", ttl_s=2.0).keep()  # a restart under the same name takes it back
        await asyncio.sleep(2.5)  # "one" went silent past its TTL
        assert await second.keep() and not await first.keep()
    finally:
        await client.aclose()
