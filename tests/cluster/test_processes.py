"""The cluster's processes for real: `python -m fortress.cluster.control` on a database made by
`fortress init`, `python -m fortress.cluster.producer` fed frames on stdin as a proxy worker feeds its
usage writer, one redis-server; then SIGKILL of the control node and of Redis in the middle of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from fortress.cluster.link import async_client
from fortress.cluster.subscriber import Subscriber
from fortress.config import load
from fortress.state import db as dbmod
from fortress.state.secretbox import SecretBox, key_file_for
from fortress.state.sink import frame
from tests.conftest import PY, ROOT, Fortress, make_fortress

from .conftest import RedisServer, fanout_latencies, report, wait_until
from .test_usage_stream import counts, rows

FRAMES = 60
ROWS = 100


def spawn(args: list[str], log: Path, **kw: object) -> subprocess.Popen:
    """A process whose output goes to a file (a pipe nobody reads would stall it)."""
    with log.open("ab") as out:
        return subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]


def control_home(tmp_path: Path, redis_url: str) -> Fortress:
    home = tmp_path / "control"
    home.mkdir()
    return make_fortress(home, [], extra=f'[cluster]\nredis_url = "{redis_url}"\nnode_name = "control"\n')


def node_config(tmp_path: Path, redis_url: str, name: str) -> Path:
    """A node's whole config.toml: no database, Redis for everything."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[cluster]\nredis_url = "{redis_url}"\nrole = "node"\nnode_name = "{name}"\n')
    return path


def start_control(f: Fortress) -> subprocess.Popen:
    return spawn([PY, "-m", "fortress.cluster.control", "--config", str(f.config)], f.home / "control.log")


def start_producer(config: Path) -> subprocess.Popen:
    log = config.with_suffix(".log")
    return spawn([PY, "-m", "fortress.cluster.producer", "--config", str(config)], log, stdin=subprocess.PIPE)


def stored(f: Fortress) -> int:
    with contextlib.closing(sqlite3.connect(f.db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage").fetchone()[0]


def batches_recorded(f: Fortress) -> int:
    with contextlib.closing(sqlite3.connect(f.db)) as conn:
        return conn.execute("SELECT COUNT(*) FROM usage_batches").fetchone()[0]


def finish(producer: subprocess.Popen, f: Fortress, control: subprocess.Popen) -> None:
    """End of the proxy's input; then every row must land exactly once."""
    assert producer.stdin is not None
    producer.stdin.close()
    assert producer.wait(60) == 0
    asyncio.run(wait_until(lambda: stored(f) >= FRAMES * ROWS, timeout=60, what="every row stored"))
    time.sleep(0.5)  # anything stored twice would show now
    control.send_signal(signal.SIGTERM)
    assert control.wait(30) == 0
    assert counts(f.db) == (FRAMES * ROWS, FRAMES * ROWS, FRAMES * ROWS)
    assert batches_recorded(f) == FRAMES


def test_sigkill_of_the_control_node_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    f = control_home(tmp_path, redis_server.url)
    control = start_control(f)
    producer = start_producer(node_config(tmp_path, redis_server.url, "n2"))
    assert producer.stdin is not None
    killed = 0
    try:
        for i in range(FRAMES):
            producer.stdin.write(frame(rows(ROWS, i * ROWS)))
            producer.stdin.flush()
            time.sleep(0.02)
            if i in (20, 40):
                asyncio.run(wait_until(lambda: stored(f) > 0, timeout=30, what="some rows stored"))
                control.send_signal(signal.SIGKILL)
                control.wait(10)
                killed += 1
                control = start_control(f)
        finish(producer, f, control)
    finally:
        for proc in (producer, control):
            if proc.poll() is None:
                proc.kill()
    assert killed == 2
    log = (f.home / "control.log").read_text()
    assert log.count("holds the lease") == 3  # each start took the lease back at once (same name)


def test_redis_killed_and_restarted_with_aof_mid_production_loses_nothing(
    tmp_path: Path, redis_aof: RedisServer
) -> None:
    f = control_home(tmp_path, redis_aof.url)
    node = node_config(tmp_path, redis_aof.url, "n2")
    control = start_control(f)
    producer = start_producer(node)
    assert producer.stdin is not None
    try:
        for i in range(FRAMES):
            producer.stdin.write(frame(rows(ROWS, i * ROWS)))
            producer.stdin.flush()
            time.sleep(0.02)
            if i == 20:
                asyncio.run(wait_until(lambda: stored(f) > 0, timeout=30, what="some rows stored"))
                redis_aof.stop(kill=True)
            if i == 40:
                redis_aof.start()  # same port, same directory: the append-only file is replayed
        finish(producer, f, control)
    finally:
        for proc in (producer, control):
            if proc.poll() is None:
                proc.kill()
    log = node.with_suffix(".log").read_text()
    assert "Redis unreachable" in log and "Redis answers again" in log  # the producer held its batches
    assert "0 dropped" in log


def test_fanout_from_a_separate_control_process(tmp_path: Path, redis_server: RedisServer) -> None:
    """The figure for the report: SQLite commit on the control node -> the node holds the change."""
    f = control_home(tmp_path, redis_server.url)
    control = start_control(f)
    try:
        latencies = asyncio.run(_measure(f, redis_server.url, changes=30))
    finally:
        control.send_signal(signal.SIGTERM)
        control.wait(30)
    print(report("control in its own process", latencies))
    assert max(latencies) < 5  # the target is well under 1 s; the bound is loose for a busy machine


async def _measure(f: Fortress, redis_url: str, changes: int) -> list[float]:
    client = async_client(redis_url)
    sub = Subscriber(client, SecretBox(key_file_for(load(str(f.config)))))
    db = await dbmod.connect(f.db)
    try:
        await sub.start(timeout_s=30)
        return await fanout_latencies(db, sub, changes)
    finally:
        await db.close()
        await sub.aclose()
        await client.aclose()


def test_a_control_node_killed_between_commit_and_acknowledgement_stores_nothing_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The window exactly-once is for, made to happen: rows committed, XACK not yet through, SIGKILL."""
    f = control_home(tmp_path, redis_server.url)
    raw = redis_server.client()
    control = start_control(f)
    producer = start_producer(node_config(tmp_path, redis_server.url, "n2"))
    assert producer.stdin is not None
    lock = sqlite3.connect(f.db, isolation_level=None)
    try:
        asyncio.run(
            wait_until(lambda: raw.exists("fortress:snapshot"), timeout=30, what="the control node up")
        )
        lock.execute("BEGIN IMMEDIATE")  # the consumer can read entries but not commit them
        for i in range(5):
            producer.stdin.write(frame(rows(ROWS, i * ROWS)))
        producer.stdin.flush()
        pending = lambda: raw.xpending("fortress:usage", "writers")["pending"]  # noqa: E731
        asyncio.run(wait_until(lambda: pending() > 0, timeout=30, what="entries read and pending"))
        raw.execute_command("CLIENT", "PAUSE", "20000", "WRITE")  # XACK (and further reads) will wait
        read = pending()
        lock.execute("COMMIT")
        asyncio.run(wait_until(lambda: stored(f) == read * ROWS, timeout=30, what="the rows committed"))
        control.send_signal(signal.SIGKILL)
        control.wait(10)
        raw.execute_command("CLIENT", "UNPAUSE")
        assert pending() == read  # committed, never acknowledged: Redis will deliver them again
        control = start_control(f)
        for i in range(5, FRAMES):
            producer.stdin.write(frame(rows(ROWS, i * ROWS)))
        finish(producer, f, control)
    finally:
        lock.close()
        for proc in (producer, control):
            if proc.poll() is None:
                proc.kill()
    fresh = FRAMES - read  # what the restarted control node stored; the `read` entries it skipped
    assert read > 0 and (
        f"{fresh * ROWS} usage rows stored from {fresh} batches ({read} repeated"
        in (f.home / "control.log").read_text()
    )


def test_the_control_process_refuses_a_node_config(tmp_path: Path, redis_server: RedisServer) -> None:
    done = subprocess.run(
        [
            PY,
            "-m",
            "fortress.cluster.control",
            "--config",
            str(node_config(tmp_path, redis_server.url, "n2")),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and 'role = "control"' in done.stderr
