"""Usage writer throughput: rows pushed through the proxy's real pipe (UsagePipe) into the real writer
process (`python -m fortress.state.sink`) and a real SQLite file, at an offered rate, until every row is
committed.

    .venv/bin/python bench/writer_bench.py [--rate 20000] [--seconds 10] [--history 0] [--access-log FILE]
                                           [--keep DIR]

The rows look like the proxy's (40 keys, 8 models, 3 backends, mostly 200s, unique request ids) and are
offered in steps of 10 ms from this process's event loop (uvloop), as a busy worker would record them.
Reported: rows stored (counted in the database afterwards), rows dropped, the time from the first row
offered to the last one committed, the sustained rate (stored / that time), how long the backlog took to
drain once the offered load stopped, and CPU per row: the writer process's (utime+stime, from the
child's rusage) and this process's (recording, framing and pipe writes: the part a worker pays).
The writer keeps up when the backlog drains within about one batch interval after the load stops.
--access-log FILE also has the writer write the JSON access log (fortress.logs) to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fortress.config import LoggingConfig  # noqa: E402
from fortress.proxy.usage_pipe import UsagePipe  # noqa: E402
from fortress.state.db import migrate  # noqa: E402
from fortress.state.usage import COLUMNS  # noqa: E402

MODELS = ("llama3.2:3b", "llama3.1:8b", "qwen3:8b", "qwen3:0.6b", "gemma3:4b", "phi4:14b", "mistral:7b")
STATUSES = (200,) * 95 + (429, 429, 429, 500, 404)
STEP_S = 0.01


def make_rows(n: int, seed: int = 11) -> list[tuple]:
    """n rows in usage column order, shaped like the proxy's (see Worker.account)."""
    rng = random.Random(seed)
    now = time.time()
    keys = [(f"k{u:07d}", f"user{u:02d}") for u in range(40)]
    rows = []
    for i in range(n):
        key, user = keys[int(rng.paretovariate(1.2)) % 40]
        model = rng.choice(MODELS)
        duration = rng.lognormvariate(3, 1)
        status = rng.choice(STATUSES)
        rows.append(
            (
                now + i / 20_000,
                f"1f2e3d4c-{i:x}",
                key,
                user,
                "10.0.0.7",
                "POST",
                "/api/chat",
                model,
                f"gpu{hash(model) % 3}",
                status,
                duration / 4,
                duration,
                400 + i % 300,
                900 + i % 5000,
                rng.randint(10, 2000) if status == 200 else None,
                rng.randint(1, 800) if status == 200 else None,
                i % 2,
                None if status == 200 else "backend error",
            )
        )
    assert len(rows[0]) == len(COLUMNS)
    return rows


def seed_history(db_path: Path, rows: int) -> None:
    """Older usage, so inserts land in indexes of a realistic size (written directly, not timed)."""
    if not rows:
        return
    history = make_rows(rows, seed=3)
    shift = 40 * 86400
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        [(r[0] - shift, *r[1:]) for r in history],
    )
    conn.execute("COMMIT")
    conn.close()


async def push(db_path: Path, rows: list[tuple], rate: float, access_log: str) -> dict[str, float]:
    logs = LoggingConfig(access_log="json", access_log_path=access_log) if access_log else LoggingConfig()
    pipe = UsagePipe(str(db_path), logs)
    await pipe.start()
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    offered = 0
    while offered < len(rows):
        due = min(len(rows), int((time.perf_counter() - t0) * rate) + 1)
        for row in rows[offered:due]:
            pipe.record(row)
        offered = due
        await asyncio.sleep(STEP_S)
    load_s = time.perf_counter() - t0
    await pipe.close(timeout_s=600)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    writer_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    return {
        "load_s": load_s,
        "elapsed_s": elapsed,
        "dropped": pipe.dropped,
        "writer_cpu_s": writer_cpu,
        "pipe_cpu_s": cpu,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20_000, help="rows offered per second")
    ap.add_argument("--seconds", type=float, default=10.0, help="how long the load is offered")
    ap.add_argument("--history", type=int, default=0, help="usage rows already in the database")
    ap.add_argument("--access-log", default="", help="also write the JSON access log to this file")
    ap.add_argument("--keep", default="", help="work in this directory and keep it")
    args = ap.parse_args()
    home = Path(args.keep or tempfile.mkdtemp(prefix="fortress-writer-"))
    db_path = home / "data" / "fortress.db"
    asyncio.run(migrate(db_path))
    seed_history(db_path, args.history)
    rows = make_rows(int(args.rate * args.seconds))
    r = uvloop.run(
        push(db_path, rows, args.rate, os.path.abspath(args.access_log) if args.access_log else "")
    )
    with sqlite3.connect(db_path) as conn:
        (stored,) = conn.execute("SELECT count(*) FROM usage").fetchone()
        (hourly,) = conn.execute("SELECT coalesce(sum(requests), 0) FROM usage_hourly").fetchone()
    stored -= args.history
    drain = r["elapsed_s"] - r["load_s"]
    print(
        f"offered {len(rows):,} rows at {args.rate:,.0f} rows/s for {args.seconds:g} s "
        f"({args.history:,} rows of history{', access log on' if args.access_log else ''})"
    )
    print(f"stored {stored:,} rows (hourly roll-ups count {hourly:,}), dropped {r['dropped']:,}")
    print(
        f"first row offered -> last row committed: {r['elapsed_s']:.2f} s; backlog drained in {drain:.2f} s"
    )
    print(f"sustained: {stored / r['elapsed_s']:,.0f} rows/s")
    print(
        f"CPU per row: writer {r['writer_cpu_s'] / max(stored, 1) * 1e6:.1f} µs, "
        f"pipe side {r['pipe_cpu_s'] / max(stored, 1) * 1e6:.1f} µs"
    )
    ok = stored == len(rows) and hourly == len(rows) and drain < 1.0
    print("PASS (kept up, every row stored)" if ok else "FAIL (rows missing or the backlog lagged)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
