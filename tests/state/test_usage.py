"""The usage writer process and the proxy's side of its pipe: every batch acknowledged after its commit,
a replayed batch stored once, malformed rows rejected alone, a locked database waited out, a killed
writer restarted with nothing lost, and a bounded buffer whose drops are counted."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import psutil
import pytest

from fortress.proxy.usage_pipe import UsagePipe
from fortress.state.sink import ACK, ALL_REJECTED, HEAD, frame
from fortress.state.usage import COLUMNS, KINDS, UsageEvent, as_row, rollup, storable, write_proxy_stats

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


def _row(i: int) -> tuple:
    return as_row(_event(i, time.time()))


async def _rows(db: aiosqlite.Connection, sql: str) -> list[tuple]:
    async with db.execute(sql) as cur:
        return [tuple(r) for r in await cur.fetchall()]


def _ids(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [r[0] for r in conn.execute("SELECT request_id FROM usage ORDER BY id")]


@dataclass
class Sink:
    """A writer process (`python -m fortress.state.sink`) driven the way the proxy drives it."""

    proc: subprocess.Popen
    acks: int  # read end of the ack pipe

    def send(self, seq: int, rows: list[tuple]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame(seq, rows))
        self.proc.stdin.flush()

    def ack(self, timeout: float = 30.0) -> tuple[int, int] | None:
        """The next acknowledgement, or None if none comes within `timeout`."""
        data = b""
        while len(data) < ACK.size:
            if not select.select([self.acks], [], [], timeout)[0]:
                return None
            chunk = os.read(self.acks, ACK.size - len(data))
            assert chunk, "the writer closed its ack pipe"
            data += chunk
        seq, rejected = ACK.unpack(data)
        return seq, rejected

    def finish(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = self.proc.wait(30)
        os.close(self.acks)
        return code


@pytest.fixture
def sinks(db_path: Path) -> Iterator[list[Sink]]:
    started: list[Sink] = []
    yield started
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()


def _start(sinks: list[Sink], db_path: Path, stream: str = "test:1") -> Sink:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fortress.state.sink",
            str(db_path),
            "--stream",
            stream,
            "--ack-fd",
            str(write_fd),
        ],
        stdin=subprocess.PIPE,
        pass_fds=(write_fd,),
    )
    os.close(write_fd)
    sinks.append(Sink(proc, read_fd))
    return sinks[-1]


async def test_event_has_exactly_the_usage_columns(db: aiosqlite.Connection) -> None:
    table = [r[1] for r in await _rows(db, "PRAGMA table_info(usage)")]
    assert table == ["id", *COLUMNS] == ["id", *SCHEMA_COLUMNS]


async def test_end_of_input_stores_everything_and_rollups_match_raw_rows(
    db: aiosqlite.Connection, db_path: Path, sinks: list[Sink]
) -> None:
    sink = _start(sinks, db_path)
    base = 1_800_000_000.0
    n = 25_000
    rows = [as_row(_event(i, base)) for i in range(n)]
    for seq, start in enumerate(range(0, n, 1000), 1):
        sink.send(seq, rows[start : start + 1000])
    assert sink.finish() == 0
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
    assert await _rows(db, "SELECT stream, seq FROM usage_streams") == [("test:1", 25)]


async def test_each_batch_is_acknowledged_once_committed(
    db: aiosqlite.Connection, db_path: Path, sinks: list[Sink]
) -> None:
    sink = _start(sinks, db_path)
    sink.send(1, [_row(1), _row(2)])
    assert sink.ack() == (1, 0)
    assert _ids(db_path) == ["r1", "r2"]  # committed before the ack was written
    sink.send(2, [_row(3)])
    assert sink.ack() == (2, 0)
    assert _ids(db_path) == ["r1", "r2", "r3"]
    assert sink.finish() == 0


async def test_a_batch_sent_again_after_a_restart_is_stored_once(
    db: aiosqlite.Connection, db_path: Path, sinks: list[Sink]
) -> None:
    first = _start(sinks, db_path)
    first.send(1, [_row(1)])
    first.send(2, [_row(2), _row(3)])
    assert (first.ack(), first.ack()) == ((1, 0), (2, 0))
    first.proc.kill()  # dies with its acknowledgements unread by the proxy, which sends them again
    first.proc.wait()
    second = _start(sinks, db_path)
    for seq, rows in ((1, [_row(1)]), (2, [_row(2), _row(3)]), (3, [_row(4)])):
        second.send(seq, rows)
    assert [second.ack() for _ in range(3)] == [(1, 0), (2, 0), (3, 0)]  # replays acknowledged too
    other = _start(sinks, db_path, stream="test:2")  # another worker's batch 1 is its own
    other.send(1, [_row(5)])
    assert other.ack() == (1, 0)
    assert second.finish() == other.finish() == 0
    assert _ids(db_path) == ["r1", "r2", "r3", "r4", "r5"]


async def test_malformed_rows_are_rejected_alone(
    db: aiosqlite.Connection, db_path: Path, sinks: list[Sink]
) -> None:
    sink = _start(sinks, db_path)
    sink.send(1, [_row(1), ("not", "a", "usage", "row"), _row(2)])
    assert sink.ack() == (1, 1)
    assert sink.proc.stdin is not None
    sink.proc.stdin.write(HEAD.pack(4, 2) + b"junk")  # not marshal data at all
    sink.proc.stdin.flush()
    assert sink.ack() == (2, ALL_REJECTED)
    sink.send(3, [_row(3)])
    assert sink.ack() == (3, 0)
    assert sink.finish() == 0
    assert _ids(db_path) == ["r1", "r2", "r3"]


def test_storable_reads_the_column_types_from_the_event() -> None:
    assert len(KINDS) == len(COLUMNS)
    good = _row(1)
    assert storable(good)
    assert not storable(good[:-1])
    assert not storable(list(good))
    assert not storable((None, *good[1:]))  # ts is required
    assert storable((*good[:2], None, *good[3:]))  # key_id may be missing
    assert not storable((*good[:9], "200", *good[10:]))  # status is an int


async def test_a_locked_database_is_waited_out_not_dropped(
    db: aiosqlite.Connection, db_path: Path, sinks: list[Sink]
) -> None:
    sink = _start(sinks, db_path)
    sink.send(1, [_row(1)])
    assert sink.ack() == (1, 0)
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        sink.send(2, [_row(2)])
        # longer than the writer's 5 s busy_timeout: it must retry, not give up
        assert sink.ack(timeout=6.0) is None
    finally:
        lock.execute("COMMIT")
        lock.close()
    assert sink.ack() == (2, 0)
    assert sink.finish() == 0
    assert _ids(db_path) == ["r1", "r2"]


# ---- the proxy's side: UsagePipe -----------------------------------------------------------------


def _writers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if "fortress.state.sink" in " ".join(p.cmdline())]


async def _until(check, what: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_close_delivers_everything_and_max_pending_is_counted(
    db: aiosqlite.Connection, db_path: Path
) -> None:
    pipe = UsagePipe(str(db_path), max_pending=10)
    for i in range(15):
        pipe.record(_row(i))
    assert (len(pipe.pending), pipe.dropped) == (10, 5)
    await pipe.start()
    await pipe.close()
    assert pipe.counters() == {
        "sent": 10,
        "acknowledged": 10,
        "pending": 0,
        "dropped": 5,
        "writer_restarts": 0,
    }
    assert len(_ids(db_path)) == 10
    assert _writers() == []


async def test_a_killed_writer_is_restarted_and_nothing_is_lost_or_doubled(
    db: aiosqlite.Connection, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "fortress.usage")
    pipe = UsagePipe(str(db_path), interval_s=0.02)
    await pipe.start()
    recorded = 0
    for kill in range(3):
        for _ in range(40):  # rows flow while the writer runs...
            for _ in range(50):
                pipe.record(_row(recorded))
                recorded += 1
            await asyncio.sleep(0.005)
        (writer,) = _writers()
        writer.send_signal(signal.SIGKILL)  # ...and it dies with batches in flight
        for _ in range(50):
            pipe.record(_row(recorded))
            recorded += 1
        await _until(lambda k=kill: pipe.restarts == k + 1 and len(_writers()) == 1, "no new writer")
    await pipe.close()
    ids = _ids(db_path)
    assert len(ids) == recorded and set(ids) == {f"r{i}" for i in range(recorded)}
    assert pipe.counters() == {
        "sent": recorded,
        "acknowledged": recorded,
        "pending": 0,
        "dropped": 0,
        "writer_restarts": 3,
    }
    assert sum("exited with signal 9" in r.getMessage() for r in caplog.records) == 3


async def test_past_the_bound_batches_are_dropped_and_counted(
    db: aiosqlite.Connection, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "fortress.usage")
    pipe = UsagePipe(str(db_path), interval_s=0.02, max_unacked_bytes=20_000)
    await pipe.start()
    lock = sqlite3.connect(db_path, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the writer waits; batches pile up in the worker
    recorded = 0
    try:
        while pipe.dropped == 0:
            for _ in range(20):
                pipe.record(_row(recorded))
                recorded += 1
            await asyncio.sleep(0.03)
            assert recorded < 100_000, "nothing was ever dropped"
        assert pipe.unacked_bytes <= 20_000 and pipe.acknowledged == 0
    finally:
        lock.execute("COMMIT")
        lock.close()
    await pipe.close()
    ids = _ids(db_path)
    assert len(ids) == len(set(ids)) == pipe.acknowledged == recorded - pipe.dropped
    assert pipe.counters()["pending"] == 0
    assert any("rows dropped" in r.getMessage() for r in caplog.records)


async def test_hand_over_puts_the_rows_in_the_writers_pipe_there_and_then(
    db: aiosqlite.Connection, db_path: Path
) -> None:
    """What a cluster node's outbox calls before each burst: the rows recorded since, as one batch in
    the kernel's pipe buffer when it returns (so a proxy killed right after loses none)."""
    pipe = UsagePipe(str(db_path), interval_s=3600)  # no tick will send anything
    await pipe.start()
    assert pipe._proc is not None and pipe._proc.stdin is not None
    for turn in range(50):
        for i in range(4):
            pipe.record(_row(turn * 4 + i))
        pipe.hand_over()
        assert pipe.pending == [] and pipe.sent == (turn + 1) * 4 and pipe._seq == turn + 1
        assert pipe._proc.stdin.transport.get_write_buffer_size() == 0  # written, nothing held here
    pipe.hand_over()  # nothing new: no batch
    assert pipe._seq == 50
    await _until(lambda: pipe.acknowledged == 200, "every row acknowledged")
    await pipe.close()
    assert sorted(_ids(db_path)) == sorted(f"r{i}" for i in range(200))


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


def test_the_writer_sets_sqlite_one_thread_per_connection_before_connecting(tmp_path: Path) -> None:
    """In a fresh process (as the writer is): reconfigured before any connection, and rows are stored and
    read back as before."""
    script = f"""
import sqlite3
from fortress.state.sink import connect, one_thread_per_connection
assert one_thread_per_connection() is True
conn = connect({str(tmp_path / "t.db")!r})
conn.execute("CREATE TABLE t (a, b)")
conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, None), ("x", 2.5)])
assert conn.execute("SELECT a, b FROM t").fetchall() == [(1, None), ("x", 2.5)]
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
