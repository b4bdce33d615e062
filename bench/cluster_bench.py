"""Many nodes (issue 16): three `fortress serve` nodes on one Redis, load spread over them.

    python -m bench.cluster_bench [--seconds 10] [--connections 16] [--revokes 10]

One redis-server, one control node (its database, `python -m fortress.cluster.control`), nodes with
`role = "node"` on distinct loopback ports, the nginx Ollama look-alike as the backend, wrk for load
(POST /api/show, as W1). It measures, in order:

1. throughput: wrk against one node alone, then one wrk per node at once (the sum); on a machine with
   fewer cores than processes, the second figure says what the nodes cost together, not how they scale;
2. usage rows against requests: every request answered is one usage row in the control node's
   database once the nodes have stopped gracefully (a request wrk cut off at the end of its run is
   answered to nobody but still a row, so rows may exceed wrk's count by a few);
3. limit exactness: a key with `LIMIT/60s`, 3 x LIMIT requests at once spread over the nodes: admitted;
4. revoke time: a key used on every node, revoked with `fortress key revoke`, each node polled until it
   answers 401: the time to the last node, over `--revokes` revocations.

Everything is loopback; the figures go to stdout as a Markdown section for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import httpx

from bench.fortress_proc import _cli, config_text, prepare
from bench.nginx import MODEL, start_nginx, static_upstream_conf
from bench.procs import Service, free_port, raise_nofile, start
from bench.wrkload import WrkResult, run_wrk
from fortress.cluster.link import SNAPSHOT_TAG

SHOW = f'{{"model": "{MODEL}"}}'
LIMIT = 50


def redis_server(workdir: Path) -> Service:
    port = free_port()
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return start("redis", [*argv, "--dir", str(workdir)], port, None, workdir)


def node_config(workdir: Path, name: str, port: int, redis_url: str) -> Path:
    home = workdir / name
    home.mkdir()
    config = home / "config.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{port}"\nworkers = 1\n[database]\npath = "{home / "fortress.db"}"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nrole = "node"\nnode_name = "{name}"\n'
    )
    return config


def published(control: Path, redis_url: str) -> None:
    """Until Redis holds the control database's configuration version."""
    import redis

    client = redis.Redis.from_url(redis_url)
    with closing(sqlite3.connect(control.parent / "fortress.db")) as db:
        version = int(db.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])
    deadline = time.monotonic() + 30
    while (tag := client.get(SNAPSHOT_TAG)) is None or int(tag.split(b".")[0]) < version:
        if time.monotonic() > deadline:
            raise RuntimeError(f"configuration version {version} was not published")
        time.sleep(0.01)


def new_key(control: Path, redis_url: str, *flags: str) -> str:
    key = _cli(control, "key", "create", "--user", "bench", *flags).splitlines()[0].strip()
    published(control, redis_url)
    return key


def load(ports: list[int], key: str, connections: int, seconds: int, workdir: Path) -> list[WrkResult]:
    """One wrk per port, all at once."""
    with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
        runs = [
            pool.submit(
                run_wrk,
                f"http://127.0.0.1:{p}/api/show",
                SHOW,
                key,
                connections,
                seconds,
                None,
                workdir / str(p),
            )
            for p in ports
        ]
        return [r.result() for r in runs]


def limit_exactness(ports: list[int], key: str) -> tuple[int, int]:
    """3 x LIMIT requests spread over the nodes at once: (admitted, sent)."""
    sent = 3 * LIMIT

    def one(i: int) -> int:
        url = f"http://127.0.0.1:{ports[i % len(ports)]}/api/show"
        return httpx.post(
            url, content=SHOW, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(one, range(sent)))
    return statuses.count(200), sent


def revoke_times(control: Path, redis_url: str, ports: list[int], rounds: int) -> list[float]:
    """Seconds from `fortress key revoke` returning to the last node answering 401, per round."""
    out = []
    with httpx.Client(timeout=10) as http:
        for _ in range(rounds):
            key = new_key(control, redis_url)
            auth = {"Authorization": f"Bearer {key}"}
            for p in ports:
                assert http.get(f"http://127.0.0.1:{p}/api/tags", headers=auth).status_code == 200
            _cli(control, "key", "revoke", key.split("_")[1])
            revoked = time.monotonic()
            waiting = set(ports)
            while waiting:
                for p in list(waiting):
                    if http.get(f"http://127.0.0.1:{p}/api/tags", headers=auth).status_code == 401:
                        waiting.discard(p)
                if time.monotonic() - revoked > 10:
                    raise RuntimeError("a revoked key still works after 10 s")
            out.append(time.monotonic() - revoked)
    return out


def usage_rows(control: Path) -> int:
    with closing(sqlite3.connect(control.parent / "fortress.db")) as db:
        return int(db.execute("SELECT COUNT(*) FROM usage WHERE path = '/api/show'").fetchone()[0])


def settled_rows(control: Path, quiet_s: float = 3.0) -> int:
    """The usage rows once their count has not moved for quiet_s (the consumer has caught up)."""
    rows, since = usage_rows(control), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        if (now := usage_rows(control)) != rows:
            rows, since = now, time.monotonic()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cluster_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16, help="per wrk (one wrk per node)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--revokes", type=int, default=10)
    args = ap.parse_args(argv)
    nofile = raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="fortress-cluster-bench-"))
    services: list[Service] = []
    try:
        redis = redis_server(workdir)
        services.append(redis)
        redis_url = f"redis://127.0.0.1:{redis.port}/0"
        upstream_port = free_port()
        services.append(
            start_nginx("upstream", static_upstream_conf(workdir / "upstream", upstream_port, nofile),
                        upstream_port, None, workdir)
        )  # fmt: skip
        control_port = free_port()
        control, keys = prepare(workdir, control_port, upstream_port, name="fortress")
        control.write_text(
            config_text(control_port, upstream_port, control.parent / "fortress.db")
            + f'\n[cluster]\nredis_url = "{redis_url}"\nnode_name = "control"\n'
        )
        services.append(  # it listens on nothing: Redis's port stands in for the readiness check
            start("control", [sys.executable, "-m", "fortress.cluster.control", "--config", str(control)],
                  redis.port, None, workdir)
        )  # fmt: skip
        published(control, redis_url)
        ports = [free_port() for _ in range(args.nodes)]
        nodes = []
        for i, port in enumerate(ports):
            config = node_config(workdir, f"node{i + 1}", port, redis_url)
            argv = [sys.executable, "-m", "fortress", "serve", "--config", str(config)]
            nodes.append(start(f"node{i + 1}", argv, port, None, workdir))
        services += nodes
        for p in ports:
            (workdir / str(p)).mkdir()
        warm = load(ports, keys.user, args.connections, 2, workdir)  # pools, models, code paths
        one = load(ports[:1], keys.user, args.connections, args.seconds, workdir)
        many = load(ports, keys.user, args.connections, args.seconds, workdir)
        admitted, sent = limit_exactness(ports, new_key(control, redis_url, "--rate", f"{LIMIT}/60s"))
        revokes = revoke_times(control, redis_url, ports, args.revokes)
        requests = sum(r.requests for r in [*warm, *one, *many]) + sent
        for node in nodes:  # a graceful stop: every node's producer sends what it holds
            node.stop()
        rows = settled_rows(control)
        one_rps = sum(r.rps for r in one)
        many_rps = sum(r.rps for r in many)
        errors = sum(r.errors for r in [*one, *many])
        print(f"""
## Many nodes (issue 16)

`python -m bench.cluster_bench --seconds {args.seconds} --connections {args.connections}` at commit
{_commit()}, {os.cpu_count()} cores, everything on loopback: one redis-server, one control node
(`fortress.cluster.control`), {args.nodes} `fortress serve` nodes (`role = "node"`, 1 worker each), nginx as
the Ollama look-alike, wrk (1 thread, {args.connections} connections per node) on POST /api/show.

| figure | value |
|---|---|
| one node alone, requests/s | {one_rps:,.0f} (p99 {one[0].p99_ms:.1f} ms) |
| {args.nodes} nodes at once, requests/s (sum) | {many_rps:,.0f} ({many_rps / one_rps:.2f} x one node; p99 {max(r.p99_ms for r in many):.1f} ms) |
| errors in those runs | {errors} |
| limit `{LIMIT}/60s`, {sent} requests spread over the nodes at once | {admitted} admitted |
| revoke to refused on every node ({len(revokes)} revocations) | median {statistics.median(revokes) * 1000:.0f} ms, max {max(revokes) * 1000:.0f} ms |
| usage rows in the control database / requests answered to wrk and the limit test | {rows:,} / {requests:,} |
""")  # noqa: E501
    finally:
        for s in reversed(services):
            s.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
