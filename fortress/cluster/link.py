"""What the cluster keeps in Redis (one table of names) and the clients that reach it.

Every name starts with `fortress:`, the prefix the rate limiter uses too, so one Redis (or one database
number of it) serves one cluster. Clients fail fast and never retry on their own: each caller has its
own loop that notices an outage, says so (`connected`), and tries again at its own pace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import redis
    import redis.asyncio

SNAPSHOT = "fortress:snapshot"  # the sealed, compressed configuration (fortress.cluster.codec)
SNAPSHOT_TAG = "fortress:snapshot:version"  # "<config_version>.<digest>", set with SNAPSHOT in one MULTI
SNAPSHOT_CHANNEL = "fortress:snapshot:changed"  # pub/sub: the new tag, on every publication
SNAPSHOT_WANTED = "fortress:snapshot:wanted"  # pub/sub: a node holds a refusal; the control node answers
CONTROL_LEASE = "fortress:control"  # the control node's name while it publishes and consumes (a lease)
USAGE_STREAM = "fortress:usage"  # usage batches from the nodes
USAGE_GROUP = "writers"  # the consumer group of the control node's usage writer
USAGE_SENT = "fortress:usage:sent:"  # + "<proxy worker's stream>": its last frame the stream holds
NODES = "fortress:nodes"  # set of heartbeat keys
NODE_PREFIX = "fortress:node:"  # + "<node>:<worker>": one hash per proxy worker, expiring

CONNECT_TIMEOUT_S = 1.0
TIMEOUT_S = 2.0
STOP_WAIT_S = 5.0


def async_client(url: str, timeout_s: float = TIMEOUT_S) -> redis.asyncio.Redis:
    """An asyncio client for the cluster's background tasks (never on a request's path)."""
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.asyncio.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


def sync_client(url: str, timeout_s: float = TIMEOUT_S) -> redis.Redis:
    """A blocking client, for the usage producer process (no event loop there)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=CONNECT_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
    )


class Reachability:
    """Whether Redis answered the last call: `connected`, `last_ok` (wall clock) and `down_since`.

    An outage is logged once when it starts and once when it ends, never once per failed call.
    """

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.connected = False
        self.last_ok = 0.0
        self.down_since = 0.0
        self.last_error = ""

    def ok(self) -> None:
        now = time.time()
        if not self.connected and self.down_since:
            self.log.info("%s: Redis answers again after %.1f s", self.what, now - self.down_since)
        self.connected = True
        self.last_ok = now
        self.down_since = 0.0
        self.last_error = ""

    def failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.connected or not self.down_since:
            self.log.warning("%s: Redis unreachable (%s); retrying", self.what, self.last_error)
            self.down_since = time.time()
        self.connected = False


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait for them, for STOP_WAIT_S at most: their loops must also watch a
    stop flag, since redis-py can turn a cancellation that meets a timeout into TimeoutError."""
    for task in tasks:
        task.cancel()
    if tasks:
        _, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for task in stuck:
            logging.getLogger("fortress.cluster").error("task %s did not stop", task.get_name())
