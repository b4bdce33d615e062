"""The control node's writer for other nodes' usage: the Redis stream `fortress:usage` into SQLite, once.

Delivery. One consumer group ("writers", created at id 0 so entries written before it are read too),
this control node's name as the consumer. An entry is acknowledged (XACK) and deleted (XDEL, so the
stream holds only what is not stored yet) after the transaction holding its rows has committed.
Entries delivered but never acknowledged stay pending in Redis: after any error (and at start) this
consumer reads its own pending entries again from id 0 before new ones, and every CLAIM_EVERY_S (or
`claim_idle_s` if shorter) it takes over (XAUTOCLAIM) entries pending for more than `claim_idle_s` on
another consumer: a control node that was renamed, or a second one that died. A crash therefore
delays rows, never drops them; entries trimmed by MAXLEN before they were stored are reported as lost.

Exactly once. Every entry carries its batch's id, `<proxy worker's stream>/<first>-<last frame>`
(fortress.cluster.producer, which never adds a frame Redis holds again, even from a restarted
producer). `store_batches` runs in one IMMEDIATE transaction: it skips the batches whose id is in
usage_batches, inserts the rows of the others with their hourly roll-up, and records their ids, then
commits. An entry delivered twice (this consumer died between commit and XACK, or another took it
over) is therefore stored once, whatever the order of delivery and however many consumers race,
since the check and the record are in one write transaction. Ids are forgotten KEEP_S after their
commit; the consumer prunes them only after it has re-read its own pending entries, so a control node
that was down longer than that still recognises its own half-finished work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from fortress.cluster.link import USAGE_GROUP, USAGE_STREAM, Reachability
from fortress.state.sink import MALFORMED
from fortress.state.usage import COLUMNS, insert, storable

if TYPE_CHECKING:
    import redis.asyncio

    from fortress.cluster.lease import Lease

log = logging.getLogger("fortress.usage")
ERRORS = (redis.RedisError, OSError)
CLAIM_IDLE_S = 30.0
CLAIM_EVERY_S = 5.0
BLOCK_MS = 1000
COUNT = 100  # entries per read: one transaction
KEEP_S = 86400.0
PRUNE_EVERY_S = 600.0
RETRY_S = 0.5
REFUSED_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class Batch:
    batch: str
    rows: list[tuple]


def parse(fields: dict[bytes, bytes] | None) -> Batch:
    """A stream entry's batch; ValueError says why an entry cannot be one."""
    if not fields:
        raise ValueError("the entry is empty (trimmed from the stream before it was stored)")
    try:
        batch = fields[b"b"].decode()
        rows = json.loads(fields[b"r"])
    except KeyError as exc:
        raise ValueError(f"not a usage batch (no field {exc.args[0]!r})") from None
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ValueError(f"not a usage batch ({exc})") from None
    if not batch or not isinstance(rows, list):
        raise ValueError("not a usage batch (no id, or rows that are not a list)")
    width = len(COLUMNS)
    if not all(isinstance(r, list) and len(r) == width for r in rows):
        raise ValueError(f"batch {batch}: a row is not a list of {width} values")
    return Batch(batch, [tuple(r) for r in rows])


def store_batches(conn: sqlite3.Connection, batches: list[Batch], now: float) -> tuple[int, int]:
    """Store the batches not stored before, and their ids, in one transaction: (rows, batches skipped).

    The rows go in through usage.py's own statements, so the usage table and its hourly roll-up agree.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [b.batch for b in batches]
        query = f"SELECT batch FROM usage_batches WHERE batch IN ({', '.join('?' * len(ids))})"
        seen = {r[0] for r in conn.execute(query, ids)}
        fresh: dict[str, Batch] = {}
        for b in batches:
            if b.batch not in seen and b.batch not in fresh:
                fresh[b.batch] = b
        rows = [row for b in fresh.values() for row in b.rows]
        insert(conn, rows)
        conn.executemany(
            "INSERT INTO usage_batches (batch, stored_at) VALUES (?, ?)", [(i, now) for i in fresh]
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(rows), len(batches) - len(fresh)


def connect(db_path: str) -> sqlite3.Connection:
    """A plain sqlite3 connection, used from a worker thread (one call at a time)."""
    conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


class UsageConsumer:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        db_path: str,
        name: str,
        claim_idle_s: float = CLAIM_IDLE_S,
    ) -> None:
        """`client` must wait longer than BLOCK_MS for an answer (link.async_client(url, timeout_s=...))."""
        self.client = client
        self.db_path = db_path
        self.name = name
        self.claim_idle_s = claim_idle_s
        self.link = Reachability("usage consumer", log)
        self.rows = 0  # stored
        self.batches = 0  # stored
        self.duplicates = 0  # batches delivered again and skipped
        self.rejected = 0  # entries that were not usable batches (logged)
        self.rejected_rows = 0  # rows of usable batches that did not fit the usage table (logged)
        self.lost = 0  # entries trimmed from the stream before they were stored (logged)
        self._conn: sqlite3.Connection | None = None
        self._recovered = False
        self._claim_at = 0.0
        self._prune_at = 0.0

    async def run(self, stop: asyncio.Event, lease: Lease | None = None) -> None:
        """Consume until `stop` is set; while `lease` is held by another control node, wait."""
        self._conn = await asyncio.to_thread(connect, self.db_path)
        try:
            while not stop.is_set():
                if lease is not None and not lease.held:
                    await _wait(stop, 1.0)
                    continue
                try:
                    await self.step(stop)
                    self.link.ok()
                except redis.ResponseError as exc:
                    self._recovered = False  # NOGROUP: Redis lost the stream (restarted without persistence)
                    if "NOGROUP" not in str(exc):  # a refusal (ACL, OOM): say so, without flooding the log
                        log.error("usage consumer: Redis refused: %s", exc)
                        await _wait(stop, REFUSED_WAIT_S)
                except ERRORS as exc:
                    self.link.failed(exc)
                    self._recovered = False  # entries read before the error may be pending: read them again
                    await _wait(stop, RETRY_S)
                except Exception:  # a bug must not stop usage from being stored: log, start over
                    log.exception("usage consumer failed; starting over")
                    self._recovered = False
                    await _wait(stop, RETRY_S)
        finally:
            await asyncio.to_thread(self._conn.close)

    async def step(self, stop: asyncio.Event) -> None:
        """One round: recover pending entries if needed, claim stale ones, read and store new ones."""
        if not self._recovered:
            await self._create_group()
            while await self._handle(await self._read("0"), stop):  # own pending entries, oldest first
                pass
            self._recovered = True
        if stop.is_set():
            return
        now = time.monotonic()
        if now >= self._claim_at:
            await self._claim(stop)
            self._claim_at = now + min(CLAIM_EVERY_S, self.claim_idle_s)
        if now >= self._prune_at:
            await asyncio.to_thread(self._prune)
            self._prune_at = now + PRUNE_EVERY_S
        await self._handle(await self._read(">", block=BLOCK_MS), stop)

    async def _create_group(self) -> None:
        try:
            await self.client.xgroup_create(USAGE_STREAM, USAGE_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(
        self, start: str, block: int | None = None
    ) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        reply = await self.client.xreadgroup(
            USAGE_GROUP, self.name, {USAGE_STREAM: start}, count=COUNT, block=block
        )
        return reply[0][1] if reply else []

    async def _claim(self, stop: asyncio.Event) -> None:
        start = "0-0"
        while True:
            reply = await self.client.xautoclaim(
                USAGE_STREAM, USAGE_GROUP, self.name, int(self.claim_idle_s * 1000), start, count=COUNT
            )
            start, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []  # Redis 7 names entries trimmed meanwhile
            if deleted:
                self.lost += len(deleted)
                log.error(
                    "usage: %d batches were trimmed from the stream before they were stored", len(deleted)
                )
            if entries:
                log.warning("usage: took over %d batches another consumer left pending", len(entries))
                await self._handle(entries, stop)
            if start in (b"0-0", "0-0"):
                return

    async def _handle(
        self, entries: list[tuple[bytes, dict[bytes, bytes] | None]], stop: asyncio.Event
    ) -> bool:
        """Store what the entries hold, then acknowledge them all; False when there were none."""
        if not entries:
            return False
        batches = []
        for _, fields in entries:
            try:
                batches.append(parse(fields))
            except ValueError as exc:
                if fields:
                    self.rejected += 1
                else:
                    self.lost += 1
                log.error("usage: skipping a stream entry: %s", exc)
        if batches and not await self._store(batches, stop):
            return False  # stopping while the database is locked: the entries stay pending
        ids = [entry_id for entry_id, _ in entries]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xack(USAGE_STREAM, USAGE_GROUP, *ids).xdel(USAGE_STREAM, *ids)
            await pipe.execute()
        return True

    async def _store(self, batches: list[Batch], stop: asyncio.Event) -> bool:
        """Store, waiting out a busy database; rows that do not fit are logged and skipped, as by the
        SQLite writer (fortress.state.sink), and the rest of their batch is stored."""
        try:
            return await self._patiently(batches, stop)
        except MALFORMED:
            pass
        for b in batches:  # one at a time, to find the batch that does not fit
            try:
                if not await self._patiently([b], stop):
                    return False
                continue
            except MALFORMED as exc:
                good = [r for r in b.rows if storable(r)]
                self.rejected_rows += len(b.rows) - len(good)
                log.error(
                    "usage batch %s: %d malformed rows skipped (%s)", b.batch, len(b.rows) - len(good), exc
                )
            try:
                if not await self._patiently([Batch(b.batch, good)], stop):
                    return False
            except MALFORMED as exc:
                self.rejected_rows += len(good)
                log.error("usage batch %s cannot be stored and was skipped: %s", b.batch, exc)
        return True

    async def _patiently(self, batches: list[Batch], stop: asyncio.Event) -> bool:
        assert self._conn is not None
        since = time.monotonic()
        while True:
            try:
                rows, skipped = await asyncio.to_thread(store_batches, self._conn, batches, time.time())
                break
            except sqlite3.OperationalError as exc:  # busy or locked: wait, never drop
                if stop.is_set():
                    return False
                if time.monotonic() - since > 5.0:
                    log.warning("usage: waiting for the database (%s); nothing is lost", exc)
                    since = time.monotonic()
                await asyncio.sleep(0.1)
        self.rows += rows
        self.batches += len(batches) - skipped
        self.duplicates += skipped
        return True

    def _prune(self) -> None:
        assert self._conn is not None
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the next prune will do
            self._conn.execute("DELETE FROM usage_batches WHERE stored_at < ?", (time.time() - KEEP_S,))


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
