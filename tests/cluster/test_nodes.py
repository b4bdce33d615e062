"""The node registry: heartbeats in Redis, folded into proxy_stats by the control node, listed by node."""

from __future__ import annotations

import asyncio
import time

import aiosqlite

from admin.queries import proxy_live
from fortress import __version__
from fortress.cluster.link import NODES, async_client
from fortress.cluster.nodes import Heartbeat, NodeStatus, beat, fold, list_nodes, read_beats
from fortress.config import Config
from fortress.state.usage import write_proxy_stats

from .conftest import RedisServer
from .test_fanout import running


async def nodes_named(db: aiosqlite.Connection, names: list[str], timeout: float = 10.0) -> list[NodeStatus]:
    end = time.monotonic() + timeout
    while True:
        nodes = await list_nodes(db)
        if [n.name for n in nodes] == names:
            return nodes
        assert time.monotonic() < end, f"the dashboard lists {[n.name for n in nodes]}, not {names}"
        await asyncio.sleep(0.05)


def test_requests_per_second_come_from_the_previous_beat() -> None:
    hb = Heartbeat("n2", 42)
    first = hb.figures(100.0, 1, 10, 0, 2, 7, {})
    assert first["rps"] == 0.0 and first["worker"] == "n2:42" and first["version"] == __version__
    assert hb.figures(102.0, 0, 60, 1, 2, 7, {})["rps"] == 25.0
    assert hb.figures(103.0, 0, 5, 0, 1, 7, {})["rps"] == 0.0  # the counter went back: a restart, not a rate


async def test_every_node_shows_on_the_dashboard(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer
) -> None:
    cfg, db = control_db
    client = async_client(redis_server.url)
    workers = [Heartbeat("n2", 101), Heartbeat("n2", 102), Heartbeat("n3", 201)]
    window = {"abcd1234": {"used": 3, "limit": 5, "window_s": 10}}
    now = time.time()
    try:
        async with running(cfg):  # the control node folds every second
            for step, t in enumerate((now - 1.0, now)):
                for i, hb in enumerate(workers):
                    figures = hb.figures(
                        t, i + 1, 100 * step * (i + 1), step, 4, 9 - i, {"keys": window} if i == 2 else {}
                    )
                    await beat(client, figures)
            n2, n3 = await nodes_named(db, ["n2", "n3"])
            live = await proxy_live(db)  # the dashboard's existing sums now cover every node
        assert (n2.workers, n2.in_flight, n2.requests, n2.rps) == (2, 3, 300, 300.0)
        assert (n2.config_version, n2.version) == (8, __version__)  # the oldest config any worker runs
        assert (n3.workers, n3.in_flight, n3.requests, n3.rps, n3.config_version) == (1, 3, 300, 300.0, 7)
        assert abs(n3.last_seen - now) < 0.01  # the node's own clock, for "last seen"
        assert (live.workers, live.in_flight, live.requests, live.errors) == (3, 6, 600, 3)
        assert window in [d.get("keys") for d in live.detail]
    finally:
        await client.aclose()


async def test_a_node_that_stops_beating_leaves_the_list(
    control_db: tuple[Config, aiosqlite.Connection], redis_server: RedisServer
) -> None:
    _, db = control_db
    client = async_client(redis_server.url)
    try:
        await beat(client, Heartbeat("n2", 1).figures(time.time(), 0, 0, 0, 0, 1, {}), ttl_s=0.3)
        await beat(client, Heartbeat("n3", 1).figures(time.time(), 0, 0, 0, 0, 1, {}), ttl_s=30)
        assert await fold(client, db) == 2
        assert [n.name for n in await list_nodes(db)] == ["n2", "n3"]
        await asyncio.sleep(0.5)  # n2's hash expired in Redis
        assert [b["node"] for b in await read_beats(client)] == ["n3"]
        assert await client.smembers(NODES) == {b"fortress:node:n3:1"}  # the expired key left the set too
        await asyncio.sleep(2.0)
        await fold(client, db)  # n3's row is stamped again, n2's is 2.5 s old
        assert [n.name for n in await list_nodes(db, fresh_s=1.5)] == ["n3"]
    finally:
        await client.aclose()


async def test_a_local_proxys_rows_are_listed_by_host(
    control_db: tuple[Config, aiosqlite.Connection],
) -> None:
    _, db = control_db
    await write_proxy_stats(db, "gw1:123", 2, 40, 0, 3, "{}")  # a proxy writing proxy_stats itself
    await write_proxy_stats(db, "gw1:124", 1, 10, 0, 1, "not json")
    (gw1,) = await list_nodes(db)
    assert (gw1.name, gw1.workers, gw1.in_flight, gw1.requests, gw1.version, gw1.config_version) == (
        "gw1", 2, 3, 50, "", -1,
    )  # fmt: skip
