"""Usage accounting off the hot path: an in-memory queue written to SQLite in batches.

The proxy calls UsageWriter.record() per request (an O(1) list append that never blocks or raises);
a background task writes what piled up at most every interval_s, raw rows and the hourly roll-up in
one transaction, so charts that read usage_hourly always agree with the raw table. close() writes
everything still queued, so a graceful stop loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, fields
from operator import attrgetter

import aiosqlite

from fortress.state.db import connect, transaction

log = logging.getLogger("fortress.usage")


@dataclass(slots=True, kw_only=True)
class UsageEvent:
    """One proxied request: exactly the columns of the usage table except id, in table order."""

    ts: float
    request_id: str
    key_id: str | None = None
    user_name: str | None = None
    client_ip: str = ""
    method: str
    path: str
    model: str | None = None
    backend: str | None = None
    status: int
    ttfb_ms: float | None = None
    duration_ms: float
    bytes_in: int = 0
    bytes_out: int = 0
    prompt_eval_count: int | None = None
    eval_count: int | None = None
    stream: int = 0
    error: str | None = None


COLUMNS = tuple(f.name for f in fields(UsageEvent))
_as_row = attrgetter(*COLUMNS)
_INSERT = f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
_ROLLUP = """
INSERT INTO usage_hourly (hour, user_name, key_id, model, backend, status, requests, prompt_tokens,
                          completion_tokens, ttfb_ms_sum, duration_ms_sum, bytes_out)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (hour, user_name, key_id, model, backend, status) DO UPDATE SET
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    ttfb_ms_sum = ttfb_ms_sum + excluded.ttfb_ms_sum,
    duration_ms_sum = duration_ms_sum + excluded.duration_ms_sum,
    bytes_out = bytes_out + excluded.bytes_out
"""

RollupKey = tuple[int, str, str, str, str, int]


def rollup(events: list[UsageEvent]) -> dict[RollupKey, list[float]]:
    """Sum a batch per (hour, user, key, model, backend, status); pure, so it is tested directly."""
    sums: dict[RollupKey, list[float]] = {}
    for ev in events:
        k = (
            int(ev.ts // 3600),
            ev.user_name or "",
            ev.key_id or "",
            ev.model or "",
            ev.backend or "",
            ev.status,
        )
        acc = sums.get(k)
        if acc is None:
            acc = sums[k] = [0, 0, 0, 0.0, 0.0, 0]
        acc[0] += 1
        acc[1] += ev.prompt_eval_count or 0
        acc[2] += ev.eval_count or 0
        acc[3] += ev.ttfb_ms or 0.0
        acc[4] += ev.duration_ms
        acc[5] += ev.bytes_out
    return sums


async def write_batch(db: aiosqlite.Connection, events: list[UsageEvent]) -> None:
    """Raw rows and their roll-up in one transaction: both land, or neither."""
    rows = [_as_row(ev) for ev in events]
    hourly = [(*k, *v) for k, v in rollup(events).items()]
    async with transaction(db):
        await db.executemany(_INSERT, rows)
        await db.executemany(_ROLLUP, hourly)


class UsageWriter:
    """Queue of usage events with a background task that writes them in batches."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        interval_s: float = 0.25,
        max_batch: int = 5000,
        max_pending: int = 100_000,
    ) -> None:
        self.db_path = db_path
        self.interval_s = interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.written = 0  # events stored so far
        self.dropped = 0  # events refused because the queue was full (the database fell behind)
        self._pending: list[UsageEvent] = []
        self._db: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def record(self, ev: UsageEvent) -> None:
        """Queue one event; O(1), never blocks, never raises."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append(ev)

    async def start(self) -> None:
        self._db = await connect(self.db_path)
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        """Write every interval until close(); never cancelled mid-write (that would lose a batch)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            try:
                await self.flush()
            except (sqlite3.OperationalError, OSError) as exc:
                log.error("usage write failed, will retry: %s (%d events pending)", exc, self.pending)

    async def flush(self) -> None:
        """Write everything queued now; a failed batch goes back to the front of the queue."""
        assert self._db is not None, "UsageWriter.start() was not called"
        batch, self._pending = self._pending, []
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            try:
                await write_batch(self._db, chunk)
            except (sqlite3.OperationalError, OSError, asyncio.CancelledError):  # busy, disk: retry later
                self._pending[:0] = batch[start:]
                raise
            except Exception:  # a malformed event must not block the queue forever
                log.exception("usage: dropping a batch of %d events that cannot be stored", len(chunk))
                self.dropped += len(chunk)
                continue
            self.written += len(chunk)

    async def close(self) -> None:
        """Stop the task and write what is left (retrying briefly if the database is busy)."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
        if self._db is None:
            return
        deadline = time.monotonic() + 10.0
        while self._pending:
            try:
                await self.flush()
            except (sqlite3.OperationalError, OSError) as exc:
                if time.monotonic() > deadline:
                    log.error("usage: %d events lost at shutdown: %s", self.pending, exc)
                    break
                await asyncio.sleep(0.1)
        await self._db.close()
        self._db = None


async def write_proxy_stats(
    db: aiosqlite.Connection,
    worker: str,
    in_flight: int,
    requests: int,
    errors: int,
    connections: int,
    detail_json: str = "{}",
) -> None:
    """Upsert this worker's live figures (called about once a second) for the admin dashboard."""
    await db.execute(
        """INSERT INTO proxy_stats (worker, ts, in_flight, requests, errors, connections, detail)
           VALUES (?, ?, ?, ?, ?, ?, ?)
           ON CONFLICT (worker) DO UPDATE SET ts = excluded.ts, in_flight = excluded.in_flight,
               requests = excluded.requests, errors = excluded.errors,
               connections = excluded.connections, detail = excluded.detail""",
        (worker, time.time(), in_flight, requests, errors, connections, detail_json),
    )
