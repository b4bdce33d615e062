"""Fixtures for the cluster tests: a real redis-server per test, on a free loopback port in a temp dir.

`RedisServer` can be stopped (gracefully or with SIGKILL) and started again on the same port and
directory; with `aof=True` it keeps its data across that restart (appendfsync always, so even a
SIGKILL loses nothing Redis acknowledged).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite
import pytest

from fortress.cluster.publisher import POLL_S
from fortress.cluster.subscriber import Subscriber
from fortress.config import ClusterConfig, Config, DatabaseConfig
from fortress.state import db as dbmod
from fortress.state import repo
from fortress.state.load import read_config_version
from tests.conftest import free_port


@dataclass
class RedisServer:
    directory: Path
    aof: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.directory), "--appendonly", "yes" if self.aof else "no"]
        if self.aof:
            args += ["--appendfsync", "always"]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory).start()
    yield server
    server.stop()


@pytest.fixture
def redis_aof(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis-aof"
    directory.mkdir()
    server = RedisServer(directory, aof=True).start()
    yield server
    server.stop()


async def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    """Poll `predicate` every 10 ms until it is true; fail after `timeout` (generous: a shared machine)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def control_config(home: Path, redis_url: str, name: str = "control", **cluster: object) -> Config:
    """A control node's settings: a database under `home`, Redis at `redis_url`."""
    return Config(
        database=DatabaseConfig(str(home / "data" / "fortress.db")),
        cluster=ClusterConfig(redis_url=redis_url, role="control", node_name=name, **cluster),  # type: ignore[arg-type]
    )


@pytest.fixture
async def control_db(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[Config, aiosqlite.Connection]]:
    """A migrated database for a control node, and a connection the test writes configuration through."""
    cfg = control_config(tmp_path, redis_server.url)
    await dbmod.migrate(cfg.database.path)
    db = await dbmod.connect(cfg.database.path)
    yield cfg, db
    await db.close()


async def fanout_latencies(db: aiosqlite.Connection, sub: Subscriber, changes: int) -> list[float]:
    """Create and revoke keys on the control node's database, at random moments of the publisher's
    poll; for each change, the seconds from its commit until the started subscriber `sub` holds it."""
    arrived: dict[int, float] = {}
    sub.on_change = lambda d: arrived.setdefault(d.snapshot.version, time.perf_counter())
    await repo.add_user(db, "fanout", actor="test")
    out = []
    for i in range(changes):
        await asyncio.sleep(random.uniform(0, POLL_S))
        if i % 2 == 0:
            _, key = await repo.create_key(db, "fanout", actor="test", rate="5/10s")
        else:
            await repo.set_key_state(db, key.id, "revoked", actor="test")
        committed = time.perf_counter()
        version = await read_config_version(db)
        await wait_until(lambda v=version: v in arrived, what=f"version {version} on the node")
        out.append(arrived[version] - committed)
        held = sub.current.snapshot.keys[key.id]  # type: ignore[union-attr]
        assert held.state == ("active" if i % 2 == 0 else "revoked") and held.rate == (5, 10)
    return out


def report(what: str, latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return (
        f"\nSQLite commit -> node holds it ({what}, {len(ms)} changes): "
        f"median {statistics.median(ms):.0f} ms, p90 {ms[int(len(ms) * 0.9)]:.0f} ms, max {ms[-1]:.0f} ms"
    )
