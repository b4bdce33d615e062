"""The control node's side of configuration fan-out: keep Redis's snapshot equal to the database's.

`step()` runs every POLL_S: one indexed SQLite read (config_version, bumped by triggers on every
configuration write) and one Redis GET (the published tag). It publishes when the database moved on,
when Redis has no snapshot (a fresh or restarted Redis without persistence), or when Redis holds
another tag than the one published last (a Redis restored from an older append-only file). The first
step always publishes, so a control node restarted with a changed config.toml (file backends, policy
defaults) is seen by every node although the database's version did not move.

Publication is one MULTI/EXEC: the snapshot, its tag, and a pub/sub notice carrying the tag. A node
never reads a snapshot without its tag or the other way round, and a node that misses the notice
finds the tag on its next poll (fortress.cluster.subscriber).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fortress.cluster.codec import encode, tag_of
from fortress.cluster.link import SNAPSHOT, SNAPSHOT_CHANNEL, SNAPSHOT_TAG
from fortress.config import Config
from fortress.state.load import load_snapshot, read_config_version
from fortress.state.repo import get_settings
from fortress.state.secretbox import SecretBox

if TYPE_CHECKING:
    import aiosqlite
    import redis.asyncio

log = logging.getLogger("fortress.cluster")
POLL_S = 0.1


class Publisher:
    def __init__(
        self, db: aiosqlite.Connection, cfg: Config, client: redis.asyncio.Redis, box: SecretBox
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.client = client
        self.box = box
        self.version = -1  # the config version last published; -1: nothing yet, so the first step publishes
        self.tag = ""
        self.publications = 0

    async def step(self) -> bool:
        """Publish if Redis does not hold what the database says; True when it did."""
        version = await read_config_version(self.db)
        held = await self.client.get(SNAPSHOT_TAG)
        if version == self.version and held is not None and held.decode() == self.tag:
            return False
        await self.publish()
        return True

    async def answer(self) -> None:
        """A node holds a refusal a newer snapshot may overturn (a key just created): publish if the
        database moved on, else announce the current tag again, so the node stops waiting at once."""
        if not await self.step():
            await self.client.publish(SNAPSHOT_CHANNEL, self.tag)

    async def publish(self) -> str:
        snapshot = await load_snapshot(self.db, self.cfg)
        blob = encode(snapshot, await get_settings(self.db), self.box)
        tag = tag_of(snapshot.version, blob)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.set(SNAPSHOT, blob).set(SNAPSHOT_TAG, tag).publish(SNAPSHOT_CHANNEL, tag)
            await pipe.execute()
        self.version, self.tag = snapshot.version, tag
        self.publications += 1
        log.info(
            "published configuration version %d (%d keys, %d backends, %d bytes)",
            snapshot.version,
            len(snapshot.keys),
            len(snapshot.backends),
            len(blob),
        )
        return tag
