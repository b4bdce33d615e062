"""Which backends exist (config.toml plus database, credentials decrypted) and their last probe.

Probes are cached for a few seconds so a dashboard polling every two seconds costs each backend
at most one small round of requests per interval, and a dead backend never stalls every poll.
"""

from __future__ import annotations

import asyncio
import time

import aiosqlite

from admin.backend_client import Probe, Target, probe
from fortress.config import Config
from fortress.state.load import load_snapshot
from fortress.state.snapshot import BackendRecord


async def records(db: aiosqlite.Connection, cfg: Config) -> tuple[BackendRecord, ...]:
    return (await load_snapshot(db, cfg)).backends


async def targets(db: aiosqlite.Connection, cfg: Config) -> list[Target]:
    return [Target.from_record(b) for b in await records(db, cfg)]


async def target(db: aiosqlite.Connection, cfg: Config, name: str) -> Target:
    for t in await targets(db, cfg):
        if t.name == name:
            return t
    raise LookupError(f"no backend named {name!r}")


class Inventory:
    def __init__(self, max_age_s: float = 4.0) -> None:
        self.max_age_s = max_age_s
        self._cache: dict[tuple[str, str], tuple[float, Probe]] = {}

    async def probe_all(self, ts: list[Target], *, fresh: bool = False) -> dict[str, Probe]:
        """name -> Probe for every target, probing those whose cached result is stale (in parallel)."""
        now = time.monotonic()
        stale = [
            t for t in ts if fresh or now - self._cache.get((t.name, t.url), (-1e9, None))[0] > self.max_age_s
        ]
        results = await asyncio.gather(*(probe(t) for t in stale))
        for t, result in zip(stale, results, strict=True):
            self._cache[(t.name, t.url)] = (time.monotonic(), result)
        return {t.name: self._cache[(t.name, t.url)][1] for t in ts}

    def forget(self) -> None:
        self._cache.clear()
