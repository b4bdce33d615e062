"""Every proxy worker of every node, for the admin's dashboard: heartbeats in Redis, folded into proxy_stats.

Node side: `Heartbeat.figures()` is a worker's proxy_stats row (in flight, requests, errors,
connections, detail) plus who it is (node, Fortress version, configuration version) and its
requests/s since the previous beat; `beat()` writes it as the hash `fortress:node:<node>:<pid>`,
which expires after TTL_S unless the next beat renews it, and lists the hash in the set `fortress:nodes`.

Control side: `fold()` runs each second, reads the live hashes and upserts them into proxy_stats, so
the dashboard's sums (in flight, requests/s, errors, key windows, backend health) cover every node while
the admin keeps a single source and no Redis client; `list_nodes()` is the per-node table it shows.
A node that stops beating leaves the table TTL_S plus the dashboard's freshness window later. Liveness
is Redis's expiry, not a comparison of clocks, so a node whose clock is off still shows as live;
its own clock only feeds the "last seen" it reports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fortress import __version__
from fortress.cluster.link import NODE_PREFIX, NODES
from fortress.state.db import transaction
from fortress.state.usage import write_proxy_stats

if TYPE_CHECKING:
    import aiosqlite
    import redis.asyncio

TTL_S = 5.0
FRESH_S = 5.0  # the dashboard's window (admin/queries.proxy_live)
FORGET_S = 86400.0  # proxy_stats rows of workers gone this long are deleted by fold()
_COUNTS = ("in_flight", "requests", "errors", "connections")


@dataclass
class Heartbeat:
    """One proxy worker's identity, and its previous sample for requests/s."""

    node: str
    pid: int
    version: str = __version__
    _last: tuple[float, int] | None = field(default=None, repr=False)

    @property
    def worker(self) -> str:
        return f"{self.node}:{self.pid}"

    def figures(
        self,
        now: float,
        in_flight: int,
        requests: int,
        errors: int,
        connections: int,
        config_version: int,
        detail: dict[str, Any],
    ) -> dict[str, Any]:
        """The row a beat carries; `now` is wall-clock seconds, `requests` the worker's cumulative count."""
        rps = 0.0
        if self._last is not None and now > self._last[0] and requests >= self._last[1]:
            rps = (requests - self._last[1]) / (now - self._last[0])
        self._last = (now, requests)
        return {
            "node": self.node,
            "worker": self.worker,
            "version": self.version,
            "config_version": config_version,
            "ts": now,
            "in_flight": in_flight,
            "requests": requests,
            "errors": errors,
            "connections": connections,
            "rps": round(rps, 3),
            "detail": detail,
        }


def stats_detail(figures: dict[str, Any]) -> str:
    """proxy_stats.detail for a beat: the worker's detail plus who and how fast, as list_nodes reads it."""
    return json.dumps(
        {
            **figures["detail"],
            "node": figures["node"],
            "version": figures["version"],
            "config_version": figures["config_version"],
            "rps": figures["rps"],
            "last_seen": figures["ts"],
        }
    )


async def beat(client: redis.asyncio.Redis, figures: dict[str, Any], ttl_s: float = TTL_S) -> None:
    key = NODE_PREFIX + figures["worker"]
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping={k: json.dumps(v) for k, v in figures.items()})
        pipe.pexpire(key, int(ttl_s * 1000))
        pipe.sadd(NODES, key)
        await pipe.execute()


async def read_beats(client: redis.asyncio.Redis) -> list[dict[str, Any]]:
    """The live beats; keys that expired are dropped from the set on the way."""
    keys = sorted(await client.smembers(NODES))
    if not keys:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(key)
        hashes = await pipe.execute()
    beats, gone = [], []
    for key, fields in zip(keys, hashes, strict=True):
        if not fields:
            gone.append(key)
            continue
        try:
            beats.append({k.decode(): json.loads(v) for k, v in fields.items()})
        except ValueError:
            gone.append(key)
    if gone:
        await client.srem(NODES, *gone)
    return beats


async def fold(client: redis.asyncio.Redis, db: aiosqlite.Connection) -> int:
    """Copy the live beats into proxy_stats (stamped with this clock); returns how many."""
    beats = await read_beats(client)
    async with transaction(db):
        for b in beats:
            try:
                counts = [int(b[k]) for k in _COUNTS]
                detail = stats_detail(b)
            except (KeyError, TypeError, ValueError):
                continue  # a hash written by something else than beat()
            await write_proxy_stats(db, str(b["worker"]), *counts, detail)
        await db.execute("DELETE FROM proxy_stats WHERE ts < ?", (time.time() - FORGET_S,))
    return len(beats)


@dataclass(frozen=True)
class NodeStatus:
    name: str
    version: str  # Fortress version, "" when the row does not say
    config_version: int  # the oldest any of its workers runs (a lagging one shows); -1 when unknown
    workers: int
    in_flight: int
    requests: int
    rps: float
    last_seen: float


async def list_nodes(db: aiosqlite.Connection, fresh_s: float = FRESH_S) -> list[NodeStatus]:
    """One line per node with a worker reporting in the last `fresh_s`, by name.

    Rows without a node in their detail are a local proxy's (host:pid) and are grouped by host.
    """
    async with db.execute(
        "SELECT worker, ts, in_flight, requests, detail FROM proxy_stats WHERE ts > ?",
        (time.time() - fresh_s,),
    ) as cur:
        rows = await cur.fetchall()
    groups: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for r in rows:
        try:
            detail = json.loads(r[4])
        except ValueError:
            detail = {}
        if not isinstance(detail, dict):
            detail = {}
        name = str(detail.get("node") or r[0].rpartition(":")[0] or r[0])
        groups.setdefault(name, []).append((r, detail))
    out = []
    for name, members in sorted(groups.items()):
        details = [d for _, d in members]
        out.append(
            NodeStatus(
                name=name,
                version=max((str(d.get("version", "")) for d in details), default=""),
                config_version=min(
                    (int(d["config_version"]) for d in details if "config_version" in d), default=-1
                ),
                workers=len(members),
                in_flight=sum(r[2] for r, _ in members),
                requests=sum(r[3] for r, _ in members),
                rps=round(sum(float(d.get("rps", 0.0)) for d in details), 3),
                last_seen=max(float(d.get("last_seen", r[1])) for r, d in members),
            )
        )
    return out
