"""Usage across nodes: producer to the Redis stream, consumer into SQLite, once (real Redis and SQLite).

The crash tests with separate processes are in test_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fortress.cluster.consumer import Batch, UsageConsumer, store_batches
from fortress.cluster.link import USAGE_GROUP, USAGE_STREAM, async_client, sync_client
from fortress.cluster.producer import ENTRY_ROWS, Frames, Producer
from fortress.state import db as dbmod
from fortress.state.sink import HEAD, frame
from fortress.state.usage import UsageEvent, as_row

from .conftest import RedisServer, wait_until


def rows(n: int, start: int = 0, node: str = "n2") -> list[tuple]:
    return [
        as_row(
            UsageEvent(
                ts=1_700_000_000.0 + i,
                request_id=f"{node}-{i}",
                key_id="abcd1234",
                user_name="alice",
                method="POST",
                path="/api/chat",
                model="llama3",
                backend="gpu",
                status=200,
                duration_ms=12.5,
                prompt_eval_count=3,
                eval_count=i,
            )
        )
        for i in range(start, start + n)
    ]


def counts(db_path: Path) -> tuple[int, int, int]:
    """(usage rows, distinct request ids, requests in the hourly roll-up)."""
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage").fetchone()
        (hourly,) = conn.execute("SELECT COALESCE(SUM(requests), 0) FROM usage_hourly").fetchone()
    return total, distinct, hourly


@pytest.fixture
async def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "fortress.db"
    await dbmod.migrate(path)
    return path


@contextlib.asynccontextmanager
async def consuming(
    url: str, db_path: Path, name: str = "control", **kw: float
) -> AsyncIterator[UsageConsumer]:
    client = async_client(url, timeout_s=5)
    consumer = UsageConsumer(client, str(db_path), name, **kw)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield consumer
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await client.aclose()


def test_store_batches_skips_what_it_stored_before(tmp_path: Path, db_path: Path) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    a, b, c = Batch("n2/1.0/1", rows(3)), Batch("n2/1.0/2", rows(2, 3)), Batch("n3/7.0/1", rows(4, 0, "n3"))
    assert store_batches(conn, [a, b], now=100.0) == (5, 0)
    assert store_batches(conn, [a, c, c], now=101.0) == (4, 2)  # a: stored before; c: twice in one read
    conn.close()
    assert counts(db_path) == (9, 9, 9)


def producer(server: RedisServer, stream: str = "gw2:7:1") -> Producer:
    return Producer(sync_client(server.url), "n2", stream, maxlen=1000)


async def test_a_successor_does_not_send_again_what_redis_holds(
    redis_server: RedisServer, db_path: Path
) -> None:
    first, again = producer(redis_server), producer(redis_server)  # a producer, and its successor
    first.add(1, rows(5))
    first.add(2, rows(5, 5))
    assert [seq for seq, _ in first.flush()] == [1, 2]
    again.add(1, rows(5))  # the proxy worker sends frames 1 and 2 again: their ack never reached it
    again.add(2, rows(5, 5))
    again.add(3, rows(5, 10))
    assert again.flush() == [(1, []), (2, []), (3, rows(5, 10))]  # 1 and 2 acknowledged, not sent
    assert (again.repeated, again.sent, again.held) == (2, 5, 0)
    entries = redis_server.client().xrange(USAGE_STREAM)
    assert [e[1][b"b"] for e in entries] == [b"gw2:7:1/1-2", b"gw2:7:1/3-3"]  # one entry per flush
    assert redis_server.client().get("fortress:usage:sent:gw2:7:1") == b"3"
    async with consuming(redis_server.url, db_path) as consumer:
        await wait_until(lambda: consumer.batches == 2, what="two entries stored")
        assert (consumer.rows, consumer.duplicates) == (15, 0)
    assert counts(db_path) == (15, 15, 15)
    assert redis_server.client().xlen(USAGE_STREAM) == 0  # acknowledged entries are deleted


def test_frames_become_entries_of_at_most_entry_rows(redis_server: RedisServer) -> None:
    node = producer(redis_server)
    for i in range(ENTRY_ROWS * 2 + 5):  # a node's frames: one row each
        node.add(i + 1, rows(1, i))
    node.add(ENTRY_ROWS * 2 + 6, rows(ENTRY_ROWS + 1, 5000))  # a frame is never split
    assert len(node.flush()) == ENTRY_ROWS * 2 + 6 and node.sent == ENTRY_ROWS * 3 + 6
    entries = redis_server.client().xrange(USAGE_STREAM)
    ids = [e[1][b"b"].decode().rpartition("/")[2] for e in entries]
    last = ENTRY_ROWS * 2 + 6
    assert ids == [
        f"1-{ENTRY_ROWS}",
        f"{ENTRY_ROWS + 1}-{ENTRY_ROWS * 2}",
        f"{ENTRY_ROWS * 2 + 1}-{last - 1}",
        f"{last}-{last}",
    ]
    sent = [tuple(r) for e in entries for r in json.loads(e[1][b"r"])]
    assert sent == [
        tuple(json.loads(json.dumps(r))) for r in rows(ENTRY_ROWS * 2 + 5) + rows(ENTRY_ROWS + 1, 5000)
    ]


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(
    redis_server: RedisServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = redis_server.client()
    node = producer(redis_server)
    for i in range(4):  # four flushes: four entries
        node.add(i + 1, rows(10, 10 * i))
        assert len(node.flush()) == 1
    raw.xgroup_create(USAGE_STREAM, USAGE_GROUP, id="0")
    (_, delivered), *_ = raw.xreadgroup(USAGE_GROUP, "old-control", {USAGE_STREAM: ">"}, count=10)
    assert len(delivered) == 4  # now pending on a consumer that will never acknowledge them
    raw.xdel(USAGE_STREAM, delivered[0][0])  # one was trimmed before anybody stored it
    caplog.set_level(logging.WARNING, "fortress.usage")
    async with consuming(redis_server.url, db_path, claim_idle_s=0.2) as consumer:
        await wait_until(lambda: consumer.rows == 30, what="the claimed batches stored")
        assert consumer.lost == 1
    assert counts(db_path) == (30, 30, 30)
    assert raw.xpending(USAGE_STREAM, USAGE_GROUP)["pending"] == 0
    assert any("took over 3 batches" in r.message for r in caplog.records)
    assert any("1 batches were trimmed" in r.message for r in caplog.records)


async def test_what_does_not_fit_is_skipped_and_the_rest_stored(
    redis_server: RedisServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = redis_server.client()
    raw.xadd(USAGE_STREAM, {"b": "x/1/1", "r": "not json"})
    raw.xadd(USAGE_STREAM, {"b": "x/1/2", "r": "[[1, 2]]"})  # a row of the wrong width
    bad = ["not a time", *rows(1, 99)[0][1:]]  # fails in the roll-up; its batch-mate is fine
    raw.xadd(USAGE_STREAM, {"b": "x/1/3", "r": json.dumps([bad, rows(1, 98)[0]])})
    node = producer(redis_server)
    node.add(1, rows(7))
    assert node.flush()
    caplog.set_level(logging.ERROR, "fortress.usage")
    async with consuming(redis_server.url, db_path) as consumer:
        await wait_until(
            lambda: (consumer.rows, consumer.rejected, consumer.rejected_rows) == (8, 2, 1),
            what="good rows in, bad ones out",
        )
    assert counts(db_path) == (8, 8, 8)
    assert raw.xlen(USAGE_STREAM) == 0
    messages = [r.message for r in caplog.records]
    assert any("not a usage batch (Expecting value" in m for m in messages)
    assert any("batch x/1/2: a row is not a list of 18 values" in m for m in messages)
    assert any("usage batch x/1/3: 1 malformed rows skipped" in m for m in messages)


def test_batches_wait_in_order_while_redis_is_away(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fortress.usage")
    node = producer(redis_server)
    redis_server.stop()
    node.add(1, rows(400))
    assert node.flush() == [] and not node.link.connected  # nothing acknowledged: the proxy keeps them
    node.add(2, None)  # an unreadable frame: acknowledged as rejected, but in its turn
    node.add(3, rows(400, 400))
    assert node.flush() == [] and node.held == 800
    assert sum("Redis unreachable" in r.message for r in caplog.records) == 1  # once per outage
    redis_server.start()
    assert node.flush() == [(1, rows(400)), (2, None), (3, rows(400, 400))]
    assert node.link.connected and node.sent == 800 and node.held == 0
    assert any("Redis answers again" in r.message for r in caplog.records)
    (entry,) = redis_server.client().xrange(USAGE_STREAM)
    assert entry[1][b"b"] == b"gw2:7:1/1-3" and len(json.loads(entry[1][b"r"])) == 800


def test_a_frame_json_cannot_carry_is_rejected_alone(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "fortress.usage")
    node = producer(redis_server)
    node.add(1, rows(2))
    node.add(2, [(*rows(1, 2)[0][:-1], b"bytes")])  # marshal carries bytes, JSON does not
    node.add(3, rows(2, 3))
    assert node.flush() == [(1, rows(2)), (2, None), (3, rows(2, 3))]  # 2: acknowledged as rejected
    assert (node.sent, node.held) == (4, 0)
    (entry,) = redis_server.client().xrange(USAGE_STREAM)
    assert [r[1] for r in json.loads(entry[1][b"r"])] == ["n2-0", "n2-1", "n2-3", "n2-4"]
    assert any("usage batch 2: 1 rows cannot be encoded" in r.message for r in caplog.records)


def test_frames_arrive_in_pieces() -> None:
    junk = HEAD.pack(5, 3) + b"junk!"
    data = frame(1, rows(2)) + frame(2, rows(3, 2)) + junk + frame(4, rows(1, 5))
    reader = Frames()
    got = []
    for i in range(0, len(data), 7):
        got += reader.feed(data[i : i + 7])
    assert [(seq, len(b or ())) for seq, b in got] == [(1, 2), (2, 3), (3, 0), (4, 1)]
    assert got[2] == (3, None)
    assert [r for _, b in got for r in b or ()] == rows(6)
