"""A node's side of configuration fan-out: hold the snapshot the control node published in Redis.

Two ways in, one way to load: a pub/sub listener reacts to the control node's notice within
milliseconds, and a poll of the tag every `poll_s` catches a missed notice, a reconnection, or a
Redis restart. Both call `refresh()`: one GET of the tag, and only when it differs from the tag held,
one MGET of tag and snapshot, then decode and `on_change(decoded)`. Everything runs in background
tasks; the hot path only ever sees the Snapshot that `on_change` hands over.

When Redis is down the node keeps the last snapshot it decoded and serves on; `connected`,
`last_ok` and `status()` say so for /health and /metrics. A snapshot that cannot be decoded (a newer
format, damaged bytes) is logged once and the previous one stays. With `cache`, every snapshot taken
is also written there (sealed, as in Redis): a node restarted while Redis is unreachable starts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from fortress.cluster.codec import Decoded, SnapshotError, decode, version_of
from fortress.cluster.link import (
    SNAPSHOT,
    SNAPSHOT_CHANNEL,
    SNAPSHOT_TAG,
    SNAPSHOT_WANTED,
    Reachability,
    stop_tasks,
)
from fortress.state.secretbox import SecretBox

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger("fortress.cluster")
ERRORS = (redis.RedisError, OSError)
RETRY_S = 0.5  # between two attempts to re-subscribe after an error
LISTEN_S = 1.0  # how long one wait for a notice lasts


class NoSnapshot(RuntimeError):
    """A node could not get its first snapshot: the message says where it looked."""


class Subscriber:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        box: SecretBox,
        on_change: Callable[[Decoded], None] | None = None,
        poll_s: float = 0.5,
        cache: Path | None = None,
    ) -> None:
        self.client = client
        self.box = box
        self.on_change = on_change
        self.poll_s = poll_s
        self.cache = cache
        self.link = Reachability("snapshot subscriber", log)  # the polls: what `connected` reports
        self.notices = Reachability("snapshot notices", log)  # the pub/sub listener, logged on its own
        self.tag = ""
        self.current: Decoded | None = None
        self.changes = 0
        self.error = ""  # why the snapshot in Redis was not taken, "" when it was
        self._rejected = ""
        self._lock = asyncio.Lock()
        self._notice = asyncio.Event()  # set (and replaced) on every notice the listener receives
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    @property
    def version(self) -> int:
        """The configuration version in force, -1 before the first snapshot."""
        return self.current.snapshot.version if self.current else -1

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def last_ok(self) -> float:
        return self.link.last_ok

    def status(self) -> dict[str, Any]:
        """Plain figures for /health (admin detail) and /metrics."""
        return {
            "redis": "up" if self.link.connected else "down",
            "notices": "up" if self.notices.connected else "down",  # down alone: changes come by poll
            "snapshot_version": self.version,
            "last_ok": self.link.last_ok,
            "down_since": self.link.down_since,
            "error": self.error or self.link.last_error,
            "problems": list(self.current.problems) if self.current else [],
        }

    # -- start and stop ------------------------------------------------------------------------------
    async def start(self, timeout_s: float = 30.0) -> Decoded:
        """Take the first snapshot (from Redis, else from the cache), then follow changes in the background.

        Waits up to `timeout_s` for a control node to publish; raises NoSnapshot if none came.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(*ERRORS):
                await self._refresh_checked()
            if self.current is None and self.cache is not None:
                self._take_cached()
            if self.current is not None:
                break
            if time.monotonic() > deadline:
                where = "Redis is unreachable" if not self.link.connected else "Redis holds no snapshot"
                raise NoSnapshot(
                    f"no configuration after {timeout_s:.0f} s: {where}"
                    f"{f' ({self.error})' if self.error else ''}; is the control node "
                    '([cluster] role = "control") running and pointed at the same Redis?'
                )
            await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="snapshot-listen"),
            loop.create_task(self._poll(), name="snapshot-poll"),
        ]
        return self.current

    async def aclose(self) -> None:
        """Stop following. The loops also check a flag: a cancellation that lands as a Redis call times out
        comes back as TimeoutError, which they take for an outage, so cancel alone may not end them."""
        self._closing = True
        await stop_tasks(self._tasks)
        self._tasks = []

    # -- following changes ---------------------------------------------------------------------------
    async def refresh(self) -> bool:
        """Take the published snapshot if it is not the one held; True when a new one was taken."""
        async with self._lock:
            tag = await self.client.get(SNAPSHOT_TAG)
            self.link.ok()
            if tag is None or tag.decode() in (self.tag, self._rejected):
                return False
            tag, blob = await self.client.mget(SNAPSHOT_TAG, SNAPSHOT)
            if tag is None or blob is None:  # deleted in between: the next notice or poll brings it
                return False
            return self._take(tag.decode(), blob)

    async def check(self) -> None:
        """refresh() for the proxy's own configuration checks: an outage is noted (and logged once by
        `link`), never raised, so a node serves on its last snapshot."""
        with contextlib.suppress(*ERRORS):
            await self._refresh_checked()

    async def latest(self, wait_s: float) -> None:
        """check(), after asking the control node for the database's latest: a key created a moment ago
        may not be published yet (the publisher polls). The control node answers with a notice, a new
        snapshot or the current one again; past `wait_s` (no control node) the node decides on what it
        holds. Only for requests waiting on a refusal: every ask costs the control node a query."""
        notice = self._notice
        if self.notices.connected:
            with contextlib.suppress(*ERRORS):
                await self.client.publish(SNAPSHOT_WANTED, "")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(notice.wait(), wait_s)
        await self.check()

    async def _refresh_checked(self) -> None:
        try:
            await self.refresh()
        except ERRORS as exc:
            self.link.failed(exc)
            raise

    async def _poll(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_s)
            try:
                await self._refresh_checked()
            except ERRORS:
                pass
            except Exception:  # the poll is the node's safety net: it must outlive any bug
                log.exception("snapshot poll failed")

    async def _listen(self) -> None:
        while not self._closing:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(SNAPSHOT_CHANNEL)
                self.notices.ok()
                await self.refresh()  # whatever was published while this node was not listening
                while not self._closing:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=LISTEN_S)
                    if message is not None:
                        await self.refresh()
                        notice, self._notice = self._notice, asyncio.Event()
                        notice.set()
            except ERRORS as exc:
                self.notices.failed(exc)
            except Exception:
                log.exception("snapshot listener failed")
            finally:
                with contextlib.suppress(*ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(RETRY_S)

    # -- taking a snapshot -----------------------------------------------------------------------------
    def _take(self, tag: str, blob: bytes, source: str = "Redis") -> bool:
        try:
            decoded = decode(blob, self.box)
        except SnapshotError as exc:
            self.error = f"snapshot {tag} from {source}: {exc}"
            self._rejected = tag
            log.error("%s; keeping configuration version %d", self.error, self.version)
            return False
        for problem in decoded.problems:
            log.error("configuration version %d: %s", decoded.snapshot.version, problem)
        self.tag, self.current, self.error = tag, decoded, ""
        self.changes += 1
        log.info("configuration version %d from %s", decoded.snapshot.version, source)
        if source == "Redis" and self.cache is not None:
            self._write_cache(tag, blob)
        if self.on_change is not None:
            try:
                self.on_change(decoded)
            except Exception:  # the snapshot is held; whatever failed to apply it is a bug to see in the log
                log.exception("applying configuration version %d failed", decoded.snapshot.version)
        return True

    def _write_cache(self, tag: str, blob: bytes) -> None:
        assert self.cache is not None
        tmp = self.cache.with_name(f".{self.cache.name}.{os.getpid()}.tmp")
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(tag.encode() + b"\n" + blob)
            os.replace(tmp, self.cache)
        except OSError as exc:  # the cache is a convenience: serving goes on without it
            log.warning("cannot write the snapshot cache %s: %s", self.cache, exc)

    def _take_cached(self) -> None:
        assert self.cache is not None
        try:
            tag, _, blob = self.cache.read_bytes().partition(b"\n")
            version_of(tag.decode())
        except (OSError, ValueError):
            return
        self._take(tag.decode(), blob, source=f"the cache {self.cache}")
