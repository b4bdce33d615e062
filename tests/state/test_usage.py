"""The usage writer process: nothing lost at end of input, roll-ups equal to raw rows, bad batches skipped."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import aiosqlite

from fortress.proxy.usage_pipe import UsagePipe
from fortress.state.sink import frame
from fortress.state.usage import COLUMNS, UsageEvent, as_row, rollup, write_proxy_stats

SCHEMA_COLUMNS = [
    "ts",
    "request_id",
    "key_id",
    "user_name",
    "client_ip",
    "method",
    "path",
    "model",
    "backend",
    "status",
    "ttfb_ms",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "prompt_eval_count",
    "eval_count",
    "stream",
    "error",
]


def _event(i: int, base: float) -> UsageEvent:
    return UsageEvent(
        ts=base + (i % 7) * 1800.0,  # spreads over four hours
        request_id=f"r{i}",
        key_id=f"key{i % 3:05d}",
        user_name=f"user{i % 3}" if i % 11 else None,
        client_ip="127.0.0.1",
        method="POST",
        path="/api/chat",
        model=("llama3.2", "qwen3:8b", None)[i % 3],
        backend=f"b{i % 2}",
        status=(200, 200, 429, 502)[i % 4],
        ttfb_ms=(i % 5) * 1.5 if i % 13 else None,
        duration_ms=10.0 + i % 17,
        bytes_in=100,
        bytes_out=1000 + i,
        prompt_eval_count=i % 50,
        eval_count=None if i % 4 == 2 else i % 90,
        stream=i % 2,
    )


async def _rows(db: aiosqlite.Connection, sql: str) -> list[tuple]:
    async with db.execute(sql) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def test_event_has_exactly_the_usage_columns(db: aiosqlite.Connection) -> None:
    table = [r[1] for r in await _rows(db, "PRAGMA table_info(usage)")]
    assert table == ["id", *COLUMNS] == ["id", *SCHEMA_COLUMNS]


def _sink(db_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fortress.state.sink", str(db_path)], stdin=subprocess.PIPE
    )


async def test_end_of_input_stores_everything_and_rollups_match_raw_rows(
    db: aiosqlite.Connection, db_path: Path
) -> None:
    sink = _sink(db_path)
    assert sink.stdin is not None
    base = 1_800_000_000.0
    n = 25_000
    rows = [as_row(_event(i, base)) for i in range(n)]
    for start in range(0, n, 1000):
        sink.stdin.write(frame(rows[start : start + 1000]))
    sink.stdin.close()
    assert sink.wait(30) == 0
    assert await _rows(db, "SELECT COUNT(*), COUNT(DISTINCT request_id) FROM usage") == [(n, n)]
    raw = await _rows(
        db,
        """SELECT CAST(ts / 3600 AS INTEGER) AS hour, COALESCE(user_name, ''), COALESCE(key_id, ''),
                  COALESCE(model, ''), COALESCE(backend, ''), status, COUNT(*),
                  SUM(COALESCE(prompt_eval_count, 0)), SUM(COALESCE(eval_count, 0)),
                  ROUND(SUM(COALESCE(ttfb_ms, 0)), 3), ROUND(SUM(duration_ms), 3), SUM(bytes_out)
             FROM usage GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6""",
    )
    hourly = await _rows(
        db,
        """SELECT hour, user_name, key_id, model, backend, status, requests, prompt_tokens,
                  completion_tokens, ROUND(ttfb_ms_sum, 3), ROUND(duration_ms_sum, 3), bytes_out
             FROM usage_hourly ORDER BY 1, 2, 3, 4, 5, 6""",
    )
    assert len(hourly) > 20 and hourly == raw


async def test_each_batch_is_stored_as_it_arrives(db: aiosqlite.Connection, db_path: Path) -> None:
    sink = _sink(db_path)
    assert sink.stdin is not None
    try:
        sink.stdin.write(frame([as_row(_event(1, time.time()))]))
        sink.stdin.flush()
        deadline = time.monotonic() + 5
        while (await _rows(db, "SELECT COUNT(*) FROM usage"))[0][0] == 0:
            assert time.monotonic() < deadline, "the writer never wrote"
            await asyncio.sleep(0.02)
    finally:
        sink.stdin.close()
        sink.wait(10)


async def test_a_bad_batch_does_not_block_the_next(db: aiosqlite.Connection, db_path: Path) -> None:
    sink = _sink(db_path)
    assert sink.stdin is not None
    sink.stdin.write(frame([("not", "a", "usage", "row")]))  # wrong arity: cannot be stored
    sink.stdin.write(len(b"junk").to_bytes(4, "big") + b"junk")  # not marshal data at all
    sink.stdin.write(frame([as_row(_event(1, time.time()))]))
    sink.stdin.close()
    assert sink.wait(10) == 0
    assert await _rows(db, "SELECT request_id FROM usage") == [("r1",)]


async def test_the_proxy_side_queue_is_bounded_and_delivers_on_close(
    db: aiosqlite.Connection, db_path: Path
) -> None:
    pipe = UsagePipe(str(db_path), max_pending=10)
    for i in range(15):
        pipe.record(as_row(_event(i, time.time())))
    assert (len(pipe.pending), pipe.dropped) == (10, 5)
    await pipe.start()
    await pipe.close()
    assert pipe.sent == 10
    assert (await _rows(db, "SELECT COUNT(*) FROM usage"))[0][0] == 10


def test_rollup_groups_per_hour_and_dimensions() -> None:
    a = UsageEvent(
        ts=7200.5,
        request_id="a",
        method="GET",
        path="/",
        status=200,
        duration_ms=2.0,
        prompt_eval_count=1,
        eval_count=2,
        bytes_out=10,
        ttfb_ms=1.0,
    )
    b = UsageEvent(
        ts=10799.0, request_id="b", method="GET", path="/", status=200, duration_ms=3.0, bytes_out=5
    )
    c = UsageEvent(ts=10800.0, request_id="c", method="GET", path="/", status=200, duration_ms=1.0)
    assert rollup([as_row(a), as_row(b), as_row(c)]) == {
        (2, "", "", "", "", 200): [2, 1, 2, 1.0, 5.0, 15],
        (3, "", "", "", "", 200): [1, 0, 0, 0.0, 1.0, 0],
    }


async def test_proxy_stats_upsert(db: aiosqlite.Connection) -> None:
    await write_proxy_stats(db, "host:1", 3, 100, 2, 7, '{"backends": {}}')
    await write_proxy_stats(db, "host:1", 1, 150, 2, 5)
    await write_proxy_stats(db, "host:2", 0, 1, 0, 1)
    rows = await _rows(db, "SELECT worker, in_flight, requests, errors, connections, detail FROM proxy_stats")
    assert sorted(rows) == [("host:1", 1, 150, 2, 5, "{}"), ("host:2", 0, 1, 0, 1, "{}")]
