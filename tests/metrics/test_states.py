"""The figures that are states on a running proxy: requests in flight, the backend as the router and the
pool see it, the usage pipe, the configuration snapshot; and the limits' refusals by kind.

One worker, so the scrape's own publish makes every state exact at that moment (with several workers
another worker's states are at most a second old).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

import httpx

from fortress import __version__
from tests.conftest import Fortress

from .conftest import Samples, parse

LOCAL = (("backend", "local"),)
SLOW = {"X-Sim-Rate": "2", "X-Sim-Tokens": "60"}  # a stream that lasts 30 s unless the client leaves


def scrape(f: Fortress) -> Samples:
    r = httpx.get(f"{f.url}/metrics")
    assert r.status_code == 200
    return parse(r.text)


def until(f: Fortress, ok: Callable[[Samples], bool], what: str, timeout: float = 20) -> Samples:
    end = time.monotonic() + timeout
    while True:
        s = scrape(f)
        if ok(s):
            return s
        assert time.monotonic() < end, f"never saw {what}"
        time.sleep(0.05)


def pool(s: Samples, state: str) -> float:
    return s[("fortress_pool_connections", (*LOCAL, ("state", state)))]


def generate(stream: bool) -> dict:
    return {"model": "llama3.2", "prompt": "hello", "stream": stream}


def test_in_flight_backend_and_pool_follow_a_stream(fortress: Fortress) -> None:
    auth = {"Authorization": f"Bearer {fortress.key('alice', '--max-concurrent', '1')}"}
    s = scrape(fortress)
    assert s[("fortress_inflight_requests", ())] == 0
    assert s[("fortress_backend_up", LOCAL)] == 1
    assert s[("fortress_backend_breaker_state", (*LOCAL, ("state", "closed")))] == 1
    assert s[("fortress_backend_breaker_state", (*LOCAL, ("state", "open")))] == 0

    with (
        httpx.Client(base_url=fortress.url, headers=auth) as client,
        client.stream("POST", "/api/generate", json=generate(True), headers=SLOW) as r,
    ):
        lines = r.iter_lines()  # kept: a dropped iterator closes the response
        assert r.status_code == 200 and '"done":false' in next(lines)
        s = scrape(fortress)
        assert s[("fortress_inflight_requests", ())] == 1
        assert s[("fortress_backend_outstanding_requests", LOCAL)] == 1
        assert pool(s, "active") == 1
        assert ("fortress_requests_total", (("route", "/api/generate"), ("status", "200"))) not in s
        again = httpx.post(f"{fortress.url}/api/generate", json=generate(False), headers=auth)
        assert again.status_code == 429  # the key's one concurrent request is the stream
    # the client left mid-stream: counted with the status it saw, the backend connection discarded
    s = until(fortress, lambda s: s[("fortress_inflight_requests", ())] == 0, "the stream end")
    assert s[("fortress_requests_total", (("route", "/api/generate"), ("status", "200")))] == 1
    assert s[("fortress_backend_outstanding_requests", LOCAL)] == 0
    assert pool(s, "active") == 0
    assert s[("fortress_limit_refusals_total", (("kind", "concurrency"),))] == 1

    assert httpx.post(f"{fortress.url}/api/generate", json=generate(False), headers=auth).status_code == 200
    s = scrape(fortress)
    assert (pool(s, "idle"), pool(s, "active")) == (1, 0)  # kept alive for the next request
    assert s[("fortress_requests_total", (("route", "/api/generate"), ("status", "200")))] == 2


def test_token_limit_refusals_and_the_usage_pipe(fortress: Fortress) -> None:
    auth = {"Authorization": f"Bearer {fortress.key('alice', '--tokens', '5/1m')}"}
    assert httpx.post(f"{fortress.url}/api/generate", json=generate(False), headers=auth).status_code == 200
    refused = httpx.post(f"{fortress.url}/api/generate", json=generate(False), headers=auth)
    assert refused.status_code == 429 and "token limit" in refused.json()["error"]

    def stored() -> int:
        with sqlite3.connect(fortress.db) as db:
            return db.execute("SELECT count(*) FROM usage").fetchone()[0]

    s = until(
        fortress,
        lambda s: (
            s[("fortress_usage_rows_pending", ())] == 0
            and s[("fortress_usage_rows_written_total", ())] == stored() > 0
        ),
        "every usage row written",
    )
    assert s[("fortress_usage_rows_dropped_total", ())] == 0
    assert s[("fortress_usage_writer_restarts_total", ())] == 0
    assert s[("fortress_limit_refusals_total", (("kind", "tokens"),))] == 1
    assert s[("fortress_limit_refusals_total", (("kind", "rate"),))] == 0


def test_snapshot_version_and_age_follow_configuration_changes(fortress: Fortress) -> None:
    def version() -> int:
        with sqlite3.connect(fortress.db) as db:
            return int(db.execute("SELECT value FROM meta WHERE key = 'config_version'").fetchone()[0])

    s = scrape(fortress)
    assert s[("fortress_snapshot_version", ())] == version()
    assert s[("fortress_snapshot_age_seconds", ())] >= 0
    before = time.time()
    fortress.key("bob")  # a configuration write: the proxy reloads within a second
    s = until(fortress, lambda s: s[("fortress_snapshot_version", ())] == version(), "the reload")
    assert s[("fortress_snapshot_version", ())] > 1
    assert s[("fortress_snapshot_age_seconds", ())] <= time.time() - before + 0.001
    assert s[("fortress_build_info", (("version", __version__),))] == 1
    assert s[("fortress_workers", ())] == 1
    assert s[("process_cpu_seconds_total", ())] > 0
    assert s[("process_resident_memory_bytes", ())] > 10 * 2**20
    assert abs(s[("process_start_time_seconds", ())] - time.time()) < 600
