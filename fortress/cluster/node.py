"""A proxy worker's place in the cluster: what `fortress serve` wires in when `[cluster] redis_url` is set.

`Member` is a node's (`role = "node"`): its snapshot comes from the Subscriber (no database), its
configuration checks ask Redis, and those with a refusal waiting ask the control node to publish
first (fortress.proxy.freshness: a key shown on the control node works on its first request here),
its live figures are heartbeats, and its IP trust sessions are stored by the control node
(fortress.cluster.trust). `Shared` is the control node's: its
proxy works from SQLite as a single gateway does and shares only limits through Redis.

Both answer the worker's `ClusterView`: `redis_up()` for /health and the gauge
`fortress_cluster_redis_up`, `status()` for the detail admin-scope keys see. Redis "down" means the
node serves on its last snapshot with limits counted on this machine alone (fortress.pipeline.limits).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from fortress.cluster import nodes
from fortress.cluster.link import TIMEOUT_S, Reachability, async_client
from fortress.cluster.subscriber import Subscriber
from fortress.cluster.trust import WAIT_S, RemoteTrust
from fortress.config import Config
from fortress.pipeline.limits import Limiter
from fortress.state.secretbox import for_config

log = logging.getLogger("fortress.cluster")

WANT_WAIT_S = 0.5  # how long a refusal waits for the control node's answer (then: what the node holds)

if TYPE_CHECKING:
    from fortress.cluster.codec import Decoded
    from fortress.proxy.worker import Worker
    from fortress.state.snapshot import Snapshot


class Shared:
    """The control node's proxy (or a single gateway sharing limits): Redis is only its limiter's store."""

    def __init__(self, cfg: Config, limiter: Limiter) -> None:
        self.limiter = limiter
        self.heartbeat = nodes.Heartbeat(cfg.cluster.name, os.getpid())

    def redis_up(self) -> bool:
        return self._limits_shared()

    def status(self) -> dict[str, Any]:
        return {"redis": "up" if self.redis_up() else "down", "limits": self._limits()}

    def _limits_shared(self) -> bool:
        return getattr(self.limiter, "shared", True)  # False while a RedisLimiter decides locally

    def _limits(self) -> str:
        return "shared" if self._limits_shared() else "local"

    def stats_detail(self, worker: Worker, detail: dict[str, Any]) -> str:
        """The proxy_stats detail of this worker, naming its node and version for the dashboard's list."""
        return nodes.stats_detail(self._figures(worker, worker.snapshot_version, detail))

    def _figures(self, worker: Worker, config_version: int, detail: dict[str, Any]) -> dict[str, Any]:
        return self.heartbeat.figures(
            time.time(),
            worker.in_flight(),
            worker.requests,
            worker.errors,
            len(worker.connections),
            config_version,
            detail,
        )


class Member(Shared):
    """A node's proxy worker: snapshot, configuration checks, heartbeats and trust sessions through Redis."""

    def __init__(self, cfg: Config, limiter: Limiter) -> None:
        super().__init__(cfg, limiter)
        url = cfg.cluster.redis_url
        self.client = async_client(url)
        self.waiter = async_client(url, timeout_s=WAIT_S + TIMEOUT_S)  # trust answers block up to WAIT_S
        self.sub = Subscriber(
            self.client,
            for_config(cfg),
            on_change=self._changed,
            poll_s=cfg.cluster.snapshot_poll_s,
            cache=cfg.data_dir / "snapshot.cache",
        )
        self.trust = RemoteTrust(self.waiter, cfg.cluster.name)
        self.beats = Reachability("heartbeats", log)
        # the usage pipe's writer (fortress.proxy.usage_pipe): rows into Redis, the URL read from the file
        self.usage_writer = ("fortress.cluster.producer", "--config", cfg.source)
        self.worker: Worker | None = None
        self._first: Snapshot | None = None

    async def join(self) -> Snapshot:
        """The first snapshot (from Redis, else the node's cache); raises NoSnapshot with the reason."""
        self._first = (await self.sub.start()).snapshot
        return self._first

    def follow(self, worker: Worker) -> None:
        """From now on every snapshot taken goes to `worker` (built on join()'s), and any taken since."""
        self.worker = worker
        current = self.sub.current
        if current is not None and current.snapshot is not self._first:
            self._changed(current)

    def _changed(self, decoded: Decoded) -> None:
        worker = self.worker
        if worker is not None:
            worker.swap(decoded.snapshot)
            worker.poller.sync()  # new or changed backends are polled at once

    async def check(self) -> None:
        """The worker's configuration check (fortress.proxy.freshness): one GET of the published tag, and
        the snapshot when it moved. An outage is noted (logged once), never raised: the node serves on."""
        await self.sub.check()

    async def check_now(self) -> None:
        """The check for requests waiting on a refusal: what the control node's database holds now."""
        await self.sub.latest(WANT_WAIT_S)

    async def beat(self, detail: dict[str, Any]) -> None:
        """This worker's live figures for the admin's dashboard (fortress.cluster.nodes)."""
        assert self.worker is not None
        try:
            await nodes.beat(self.client, self._figures(self.worker, self.sub.version, detail))
            self.beats.ok()
        except Exception as exc:  # Redis away: said once by Reachability, and by /health
            self.beats.failed(exc)

    def redis_up(self) -> bool:
        return self.sub.connected and self._limits_shared()

    def status(self) -> dict[str, Any]:
        return {**self.sub.status(), "redis": "up" if self.redis_up() else "down", "limits": self._limits()}

    async def aclose(self) -> None:
        await self.sub.aclose()
        await self.client.aclose()
        await self.waiter.aclose()
