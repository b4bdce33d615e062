"""Usage rows: their columns, the hourly roll-up, and how a batch is stored (no event loop needed).

The proxy hands rows to a writer process (fortress.state.sink) that calls store() per batch: raw rows,
the hourly roll-up (summed from the batch in memory: one upsert per group, not per row) and the batch's
sequence number in one transaction, so charts that read usage_hourly always agree with the raw table
and a batch sent again after a writer restart is recognised (committed_seq()) and not stored twice.
write_batch() does the same on an aiosqlite connection, for seeding in tests and benchmarks.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, fields
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiosqlite


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
as_row = attrgetter(*COLUMNS)
_TYPES: dict[str, tuple[type, ...]] = {
    "float": (float, int),
    "int": (int,),
    "str": (str,),
    "None": (type(None),),
}
# the Python types each column accepts, read from UsageEvent's annotations ("float | None", ...)
KINDS = tuple(
    tuple(t for part in str(f.type).split("|") for t in _TYPES[part.strip()]) for f in fields(UsageEvent)
)


def storable(row: object) -> bool:
    """Whether a row has the usage columns' arity and types (checked only when a batch fails)."""
    return (
        isinstance(row, tuple)
        and len(row) == len(KINDS)
        and all(isinstance(v, k) for v, k in zip(row, KINDS, strict=True))
    )


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

_STREAM = """
INSERT INTO usage_streams (stream, seq, ts) VALUES (?, ?, ?)
ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, ts = excluded.ts
"""
STREAM_KEEP_S = 7 * 86400

RollupKey = tuple[int, str, str, str, str, int]


_BY = {name: i for i, name in enumerate(COLUMNS)}
_TS, _USER, _KEY, _MODEL, _BACKEND, _STATUS = (
    _BY[n] for n in ("ts", "user_name", "key_id", "model", "backend", "status")
)
_PROMPT, _COMPLETION, _TTFB, _DURATION, _OUT = (
    _BY[n] for n in ("prompt_eval_count", "eval_count", "ttfb_ms", "duration_ms", "bytes_out")
)


_DIMENSIONS = itemgetter(_USER, _KEY, _MODEL, _BACKEND, _STATUS)
_PROMPTS, _COMPLETIONS, _TTFBS, _DURATIONS, _OUTS = (
    itemgetter(i) for i in (_PROMPT, _COMPLETION, _TTFB, _DURATION, _OUT)
)


def rollup(rows: list[tuple]) -> dict[RollupKey, list[float]]:
    """Sum a batch of rows per (hour, user, key, model, backend, status); pure, so it is tested directly.

    The writer's Python work per row is small: rows are grouped first (a tuple and an append each), then
    each group's columns are summed in C."""
    groups: dict[tuple, list[tuple]] = {}
    for r in rows:
        groups.setdefault((r[_TS] // 3600, _DIMENSIONS(r)), []).append(r)
    sums: dict[RollupKey, list[float]] = {}
    for (hour, (user, key, model, backend, status)), group in groups.items():
        k = (int(hour), user or "", key or "", model or "", backend or "", status)
        acc = [
            len(group),
            sum(filter(None, map(_PROMPTS, group))),
            sum(filter(None, map(_COMPLETIONS, group))),
            sum(filter(None, map(_TTFBS, group)), 0.0),
            sum(map(_DURATIONS, group), 0.0),
            sum(map(_OUTS, group)),
        ]
        same = sums.get(k)  # None and "" are one dimension value: their groups add up
        sums[k] = acc if same is None else [a + b for a, b in zip(same, acc, strict=True)]
    return sums


def _hourly(rows: list[tuple]) -> list[tuple]:
    return [(*k, *v) for k, v in rollup(rows).items()]


def insert(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Raw rows and their hourly roll-up, inside the caller's transaction (the local writer's, or the
    cluster consumer's, which commits its batch ids with them)."""
    conn.executemany(_INSERT, rows)
    conn.executemany(_ROLLUP, _hourly(rows))


def store(conn: sqlite3.Connection, rows: list[tuple], stream: str = "", seq: int = 0) -> None:
    """Raw rows, their roll-up and (with a stream) the batch's sequence number in one transaction:
    all land, or nothing does (autocommit connection)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        insert(conn, rows)
        if stream:
            conn.execute(_STREAM, (stream, seq, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def committed_seq(conn: sqlite3.Connection, stream: str) -> int:
    """The last batch of `stream` that store() committed (0: none yet); forgets week-old streams."""
    conn.execute("DELETE FROM usage_streams WHERE ts < ?", (time.time() - STREAM_KEEP_S,))
    row = conn.execute("SELECT seq FROM usage_streams WHERE stream = ?", (stream,)).fetchone()
    return int(row[0]) if row else 0


async def write_batch(db: aiosqlite.Connection, events: list[UsageEvent]) -> None:
    """store() on an aiosqlite connection, from events (seeding in tests and benchmarks)."""
    rows = [as_row(ev) for ev in events]
    await db.execute("BEGIN IMMEDIATE")
    await db.executemany(_INSERT, rows)
    await db.executemany(_ROLLUP, _hourly(rows))
    await db.execute("COMMIT")


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
