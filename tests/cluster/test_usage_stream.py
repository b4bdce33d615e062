"""Usage across nodes: producer to the Redis stream, consumer into SQLite, once (real Redis and SQLite).

The crash tests with separate processes are in test_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fortress.cluster.consumer import Batch, UsageConsumer, store_batches
from fortress.cluster.link import USAGE_GROUP, USAGE_STREAM, async_client, sync_client
from fortress.cluster.producer import Frames, Producer
from fortress.state import db as dbmod
from fortress.state.sink import frame
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


async def test_a_batch_sent_twice_is_stored_once(redis_server: RedisServer, db_path: Path) -> None:
    producer = Producer(sync_client(redis_server.url), "n2", max_rows=10_000, maxlen=1000)
    producer.add(rows(5), batch="n2/1.0/1")
    producer.add(rows(5), batch="n2/1.0/1")  # what a re-send after a lost answer looks like in the stream
    producer.add(rows(5, 5))
    assert producer.flush() and producer.sent == 15 and producer.held == 0
    async with consuming(redis_server.url, db_path) as consumer:
        await wait_until(lambda: consumer.batches + consumer.duplicates == 3, what="three entries handled")
        assert (consumer.rows, consumer.batches, consumer.duplicates) == (10, 2, 1)
    assert counts(db_path) == (10, 10, 10)
    assert redis_server.client().xlen(USAGE_STREAM) == 0  # acknowledged entries are deleted


async def test_entries_left_pending_by_a_dead_consumer_are_claimed(
    redis_server: RedisServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = redis_server.client()
    producer = Producer(sync_client(redis_server.url), "n2", max_rows=10_000, maxlen=1000)
    for i in range(4):
        producer.add(rows(10, 10 * i))
    assert producer.flush()
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


async def test_an_entry_that_is_not_a_batch_is_skipped_and_the_rest_stored(
    redis_server: RedisServer, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = redis_server.client()
    raw.xadd(USAGE_STREAM, {"b": "x/1/1", "r": "not json"})
    raw.xadd(USAGE_STREAM, {"b": "x/1/2", "r": "[[1, 2]]"})  # a row of the wrong width
    raw.xadd(
        USAGE_STREAM,
        {
            "b": "x/1/3",
            "r": '[["not a time", "r", null, null, "", "GET", "/", null, null, 200,'
            " null, 1.0, 0, 0, null, null, 0, null]]",
        },
    )  # fails in the roll-up
    producer = Producer(sync_client(redis_server.url), "n2", max_rows=10_000, maxlen=1000)
    producer.add(rows(7))
    assert producer.flush()
    caplog.set_level(logging.ERROR, "fortress.usage")
    async with consuming(redis_server.url, db_path) as consumer:
        await wait_until(
            lambda: consumer.rows == 7 and consumer.rejected == 3, what="good rows in, bad ones out"
        )
    assert counts(db_path) == (7, 7, 7)
    assert raw.xlen(USAGE_STREAM) == 0
    assert sum("skipp" in r.message for r in caplog.records) == 3


def test_the_buffer_is_bounded_while_redis_is_away(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fortress.usage")
    producer = Producer(sync_client(redis_server.url), "n2", max_rows=1000, maxlen=1000)
    redis_server.stop()
    producer.add(rows(400))
    assert not producer.flush() and not producer.link.connected
    producer.add(rows(400, 400))
    producer.add(rows(400, 800))  # 1200 > 1000 held: dropped, counted, logged
    assert (producer.held, producer.dropped) == (800, 400)
    assert any(
        "400 rows dropped" in r.message and "usage_buffer_rows = 1000" in r.message for r in caplog.records
    )
    assert sum("Redis unreachable" in r.message for r in caplog.records) == 1  # once per outage
    redis_server.start()
    assert producer.flush() and producer.sent == 800 and producer.link.connected
    assert any("Redis answers again" in r.message for r in caplog.records)
    entries = redis_server.client().xrange(USAGE_STREAM)
    assert [e[1][b"b"].decode().rsplit("/", 1)[1] for e in entries] == ["1", "2"]  # in order, ids kept


def test_frames_arrive_in_pieces() -> None:
    data = frame(rows(2)) + frame(rows(3, 2)) + b"\x00\x00\x00\x05junk!" + frame(rows(1, 5))
    reader = Frames()
    got = []
    for i in range(0, len(data), 7):
        got += reader.feed(data[i : i + 7])
    assert [len(b) for b in got] == [2, 3, 1]
    assert [tuple(r) for b in got for r in b] == rows(6)
