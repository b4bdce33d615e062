"""The harness against real nginx processes: the static upstream, the reference proxy, wrk and our client."""

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench import nginx
from bench.client import connect, request_head
from bench.fortress_proc import Keys
from bench.procs import Meter, free_port, raise_nofile
from bench.stack import Stack, Target
from bench.workloads import SHOW_BODY, SMOKE, idle_connections
from bench.wrkload import run_wrk


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("nginx")
    nofile = raise_nofile()
    up_port, px_port = free_port(), free_port()
    up = nginx.start_nginx(
        "upstream", nginx.static_upstream_conf(workdir / "upstream", up_port, nofile), up_port, None, workdir
    )
    px = nginx.start_nginx(
        "nginx", nginx.proxy_conf(workdir / "nginx", px_port, up_port, nofile), px_port, None, workdir
    )
    s = Stack(upstream=Meter(up.proc.pid), keys=Keys("fk_bench", "fk_admin"), services=[up, px])
    s.targets = [Target("direct", up_port, None), Target("nginx", px_port, px)]
    yield s
    s.close()


async def test_client_reads_the_static_show_through_the_proxy(stack: Stack) -> None:
    port = stack.targets[1].port
    c = await connect(port, track_arrivals=True)
    try:
        r = await c.exchange(request_head("POST", "/api/show", port, "k", len(SHOW_BODY)) + SHOW_BODY)
        again = await c.exchange(request_head("POST", "/api/show", port, "k", len(SHOW_BODY)) + SHOW_BODY)
    finally:
        c.close()
    assert (r.status, again.status) == (200, 200)
    assert r.size == len(json.dumps(nginx.SHOW, separators=(",", ":")))
    assert r.arrivals and r.ttfb > 0


def test_proxy_serves_the_bench_model_list_with_the_backend_host(stack: Stack) -> None:
    tags = httpx.get(f"http://127.0.0.1:{stack.targets[1].port}/api/tags").json()
    assert [m["name"] for m in tags["models"]] == [nginx.MODEL]


def test_wrk_counts_requests_and_latency(stack: Stack, tmp_path: Path) -> None:
    r = run_wrk(
        f"http://127.0.0.1:{stack.targets[1].port}/api/show", SHOW_BODY.decode(), "k", 4, 1, None, tmp_path
    )
    assert r.requests > 100 and r.errors == 0
    assert 0 < r.p50_ms <= r.p99_ms <= r.p999_ms


def test_wrk_counts_error_statuses(stack: Stack, tmp_path: Path) -> None:
    r = run_wrk(f"http://127.0.0.1:{stack.targets[0].port}/api/nope", "{}", "k", 2, 1, None, tmp_path)
    assert r.requests > 0 and r.errors == r.requests


async def test_idle_workload_holds_every_connection(stack: Stack) -> None:
    plan = dataclasses.replace(SMOKE, idle_connections=300)
    figures = await idle_connections(stack.targets[1], stack, plan, batch=100)
    assert figures["connections"] == 300 and figures["errors"] == 0
    assert 0 <= figures["rss_per_conn_kib"] < 50
