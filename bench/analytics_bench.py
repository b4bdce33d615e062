"""Analytics on a large history: seed N usage rows (default 1,000,000) through the proxy's own usage
writer, start a real `fortress admin`, and time the /analytics page and its CSV exports over HTTP.

    .venv/bin/python bench/analytics_bench.py [--rows 1000000] [--days 30] [--runs 10] [--keep DIR]

Pass: the page renders in under 500 ms (median and worst of --runs) for the default range (7 days)
and the whole history, and every CSV export sums to the raw rows it summarises.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fortress.state.db import connect, migrate  # noqa: E402
from fortress.state.usage import UsageEvent, write_batch  # noqa: E402

BUDGET_MS = 500.0
PASSWORD = "bench-password-1"
MODELS = (
    "llama3.2:3b",
    "llama3.1:8b",
    "qwen3:8b",
    "qwen3:0.6b",
    "gemma3:4b",
    "phi4:14b",
    "mistral:7b",
    "nomic-embed",
)
STATUSES = (200,) * 95 + (429, 429, 429, 500, 404)


def events(rows: int, days: int, seed: int = 7) -> list[UsageEvent]:
    """A plausible shape: 40 users with one key each, each mostly on its own two models, 3 backends."""
    rng = random.Random(seed)
    end = time.time()
    start = end - days * 86400
    users = [(f"user{u:02d}", f"k{u:07d}", rng.sample(MODELS, 2)) for u in range(40)]
    out = []
    for i in range(rows):
        user, key, favourites = users[int(rng.paretovariate(1.2)) % 40]
        model = favourites[0] if rng.random() < 0.8 else rng.choice([*favourites, rng.choice(MODELS)])
        duration = rng.lognormvariate(6, 1)
        out.append(
            UsageEvent(
                ts=start + (end - start) * i / rows,
                request_id=f"{i:016x}",
                key_id=key,
                user_name=user,
                client_ip="10.0.0.1",
                method="POST",
                path="/api/chat",
                model=model,
                backend=f"gpu{hash(model) % 3}",
                status=rng.choice(STATUSES),
                ttfb_ms=duration / 5,
                duration_ms=duration,
                prompt_eval_count=rng.randint(10, 2000),
                eval_count=rng.randint(1, 800),
            )
        )
    return out


async def seed(db_path: Path, rows: int, days: int) -> None:
    await migrate(db_path)
    db = await connect(db_path)
    try:
        batch = 20_000
        evs = events(rows, days)
        for i in range(0, len(evs), batch):
            await write_batch(db, evs[i : i + batch])
    finally:
        await db.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(client: httpx.Client, url: str, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (url, r.status_code)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep", default="", help="work in this directory and keep it")
    args = ap.parse_args()
    home = Path(args.keep or tempfile.mkdtemp(prefix="fortress-analytics-"))
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = home / "config.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\n[admin]\nlisten = "127.0.0.1:{port}"\n'
        '[database]\npath = "data/fortress.db"\n'
    )
    db_path = home / "data" / "fortress.db"
    py = sys.executable
    subprocess.run(
        [
            py,
            "-m",
            "fortress",
            "init",
            "--admin-user",
            "admin",
            "--admin-password-stdin",
            "--config",
            str(config),
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    t0 = time.perf_counter()
    asyncio.run(seed(db_path, args.rows, args.days))
    seeded_s = time.perf_counter() - t0
    with sqlite3.connect(db_path) as raw:
        (raw_rows,) = raw.execute("SELECT count(*) FROM usage").fetchone()
        (hourly_rows,) = raw.execute("SELECT count(*) FROM usage_hourly").fetchone()
    admin = subprocess.Popen(
        [py, "-m", "fortress", "admin", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    ok = True
    try:
        base = f"http://127.0.0.1:{port}"
        c = httpx.Client(base_url=base, timeout=30)
        for _ in range(100):
            try:
                login = c.get("/login")
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        token = re.search(r'name="_csrf_token" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"username": "admin", "password": PASSWORD, "_csrf_token": token})
        today = datetime.now(UTC).date()
        first = today - timedelta(days=args.days)
        cases = {
            "default range (last 7 days)": "/analytics",
            f"whole history ({args.days + 1} days)": f"/analytics?start={first}&end={today}",
            "one user, whole history": f"/analytics?start={first}&end={today}&user=user03",
        }
        print(
            f"rows: {raw_rows:,} raw usage, {hourly_rows:,} hourly roll-up rows; seeded in {seeded_s:.1f} s"
        )
        print(
            f"{'case':<32} {'min ms':>8} {'median':>8} {'max':>8}"
            f"  (runs={args.runs}, budget {BUDGET_MS:.0f} ms)"
        )
        for name, url in cases.items():
            c.get(url)  # warm the page cache once, as a user clicking twice would
            t = timed(c, url, args.runs)
            passed = statistics.median(t) < BUDGET_MS and max(t) < BUDGET_MS
            ok &= passed
            print(
                f"{name:<32} {min(t):8.1f} {statistics.median(t):8.1f} {max(t):8.1f}"
                f"  {'ok' if passed else 'SLOW'}"
            )
        ok &= check_csv(c, db_path, str(first), str(today))
    finally:
        admin.terminate()
        admin.wait(10)
    print("PASS" if ok else "FAIL", f"(database kept in {home})" if args.keep else "")
    return 0 if ok else 1


def check_csv(c: httpx.Client, db_path: Path, first: str, last: str) -> bool:
    """Each export must agree with a direct count over the raw usage rows of the same range."""
    start = datetime.fromisoformat(first).replace(tzinfo=UTC).timestamp()
    end = (datetime.fromisoformat(last) + timedelta(days=1)).replace(tzinfo=UTC).timestamp()
    with sqlite3.connect(db_path) as raw:
        expect = {
            "daily": dict(
                raw.execute(
                    "SELECT date(ts, 'unixepoch'), count(*) FROM usage WHERE ts >= ? AND ts < ? GROUP BY 1",
                    (start, end),
                ).fetchall()
            ),
            "models": dict(
                raw.execute(
                    "SELECT model, count(*) FROM usage WHERE ts >= ? AND ts < ? GROUP BY 1", (start, end)
                ).fetchall()
            ),
            "status": {
                str(k): v
                for k, v in raw.execute(
                    "SELECT status, count(*) FROM usage WHERE ts >= ? AND ts < ? GROUP BY 1", (start, end)
                ).fetchall()
            },
        }
    good = True
    for name, want in expect.items():
        rows = list(csv.reader(io.StringIO(c.get(f"/analytics/csv/{name}?start={first}&end={last}").text)))[
            1:
        ]
        got = {r[0]: int(r[1]) for r in rows}
        same = got == want
        good &= same
        print(
            f"CSV {name:<7} {len(rows):>4} rows, {sum(got.values()):>9,} requests: "
            f"{'matches the raw rows' if same else 'MISMATCH'}"
        )
    return good


if __name__ == "__main__":
    raise SystemExit(main())
