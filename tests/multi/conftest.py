"""Issue 4 fixtures: several simulators with different, overlapping models behind one real proxy."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress, start_sim, stop

# Fast polling so health changes show within a second. The breaker cool-down equals the health interval,
# so a backend that comes back is probed and used within two health intervals (cool-down + one check).
ROUTING = """
[routing]
health_interval_s = 0.5
inventory_interval_s = 0.5
breaker_cool_down_s = 0.5
backoff_base_ms = 20
"""

# Three backends: llama3.2 only on a; mistral on b and c, loaded on both; qwen2.5 everywhere, loaded on c.
LAYOUT = {
    "a": ("--models", "llama3.2:latest,qwen2.5:0.5b", "--version", "0.12.0"),
    "b": ("--models", "qwen2.5:0.5b,mistral:latest", "--loaded", "mistral:latest", "--version", "0.11.4"),
    "c": (
        "--models",
        "mistral:latest,phi3:latest,qwen2.5:0.5b",
        "--loaded",
        "mistral:latest,qwen2.5:0.5b",
        "--version",
        "0.13.1",
    ),
}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def backends_toml(sims: dict[str, Sim], **per_backend: str) -> str:
    """[[backends]] blocks; keyword values are extra TOML lines for every backend."""
    lines = []
    for name, sim in sims.items():
        lines += ["[[backends]]", f'name = "{name}"', f'url = "{sim.url}"', *per_backend.values()]
    return "\n".join(lines) + "\n"


def cluster(tmp: Path, sims: dict[str, Sim], extra: str = "", **per_backend: str) -> Fortress:
    """A started Fortress in front of `sims`, with fast polling, in its own home `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    f = make_fortress(tmp, [], ROUTING + extra + backends_toml(sims, **per_backend))
    f.serve()
    return f


def wait_until(check: Callable[[], bool], limit: float, what: str) -> float:
    """Seconds until `check()` held; fails after `limit` seconds."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < limit, f"{what}: not within {limit} s"
        time.sleep(0.02)
    return time.monotonic() - t0


def paths(sim: Sim, path: str) -> int:
    return sum(1 for r in sim.requests() if r["path"] == path)


def usage_rows(f: Fortress, where: str, limit: float = 3.0) -> list[tuple]:
    """Usage rows matching `where`, waiting for the batched writer to land them."""
    end = time.monotonic() + limit
    while True:
        with sqlite3.connect(f.db) as db:
            rows = db.execute(f"SELECT status, backend, error, path FROM usage WHERE {where}").fetchall()
        if rows or time.monotonic() > end:
            return rows
        time.sleep(0.05)


@dataclass
class Three:
    """The shared three-backend cluster: sims by name, the proxy, an ordinary and an admin key."""

    sims: dict[str, Sim]
    fortress: Fortress
    key: str
    admin: str

    def clear(self) -> None:
        for sim in self.sims.values():
            sim.clear()

    def seen(self, path: str) -> dict[str, int]:
        return {name: paths(sim, path) for name, sim in self.sims.items()}


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, Sim]]:
    started = {name: start_sim(*args, name=name) for name, args in LAYOUT.items()}
    yield started
    for sim in started.values():
        stop(sim.proc)


@pytest.fixture(scope="module")
def three(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Three]:
    f = cluster(tmp_path_factory.mktemp("three"), sims)
    key = f.key("alice")
    admin = f.key("root", "--scope", "admin")
    url = f"{f.url}/api/tags"
    wait_until(
        lambda: len(httpx.get(url, headers=auth(key)).json()["models"]) == 4, 5, "inventory of all three"
    )
    yield Three(sims, f, key, admin)
    f.stop()
