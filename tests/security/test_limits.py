"""Issue 5, stage 7 through the real proxy: per-key request rate, tokens, concurrency; exact across workers.

Limits count in windows aligned to the clock, so each test first steps away from a window edge: a
test that straddles one would see the previous window's count fade and let one more request through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.conftest import auth


def away_from_window_edge(window_s: int = 60, need_s: float = 8.0) -> None:
    """Wait for a fresh window if fewer than `need_s` seconds are left in the current one."""
    left = window_s - time.time() % window_s
    if left < need_s:
        time.sleep(left + 0.05)


def quiet_key(f: Fortress, user: str, *flags: str) -> str:
    """Create a key and wait until the proxy knows it, without spending any of its limits.

    A blocked route answers 403 after authentication but before the limits, so polling it is free.
    """
    if user not in f.cli("user", "list").stdout.split():
        f.cli("user", "add", user)
    key = f.cli("key", "create", "--user", user, *flags).stdout.split()[0]
    end = time.monotonic() + 3
    while httpx.post(f"{f.url}/api/pull", json={}, headers=auth(key)).status_code != 403:
        assert time.monotonic() < end, "the proxy never picked up the new key"
        time.sleep(0.05)
    time.sleep(0.3)  # every worker polls the database every 0.25 s
    return key


def generate(f: Fortress, key: str, tokens: int = 5, stream: bool = False) -> httpx.Response:
    body = {"model": "llama3.2", "prompt": "hi", "stream": stream}
    return httpx.post(
        f"{f.url}/api/generate", json=body, headers={**auth(key), "X-Sim-Tokens": str(tokens)}, timeout=10
    )


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Fortress]:
    f = make_fortress(tmp_path_factory.mktemp("limited"), [("local", sim.url)])
    f.serve()
    yield f
    f.stop()


def test_rate_counts_down_then_429_with_retry_after(limited: Fortress) -> None:
    key = quiet_key(limited, "rate", "--rate", "3/60s")
    away_from_window_edge()
    seen = []
    for _ in range(3):
        r = httpx.get(f"{limited.url}/api/tags", headers=auth(key))
        assert r.status_code == 200
        assert r.headers["X-RateLimit-Limit"] == "3"
        seen.append(int(r.headers["X-RateLimit-Remaining"]))
        assert 0 < int(r.headers["X-RateLimit-Reset"]) <= 60
    assert seen == [2, 1, 0]
    r = httpx.get(f"{limited.url}/api/tags", headers=auth(key))
    assert r.status_code == 429 and "rate limit" in r.json()["error"]
    # sliding-window estimate: the window's count fades over the next window, so up to two windows
    assert 1 <= int(r.headers["Retry-After"]) <= 120
    assert r.headers["X-RateLimit-Remaining"] == "0"
    v1 = httpx.get(f"{limited.url}/v1/models", headers=auth(key))
    assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"


def test_tokens_refuse_new_requests_once_spent(limited: Fortress) -> None:
    key = quiet_key(limited, "tokens", "--tokens", "60/60s")
    away_from_window_edge()
    spent, refused = 0, False
    for i in range(12):
        r = generate(limited, key, tokens=7, stream=i % 2 == 1)
        if spent >= 60:
            assert r.status_code == 429 and "token limit" in r.json()["error"]
            assert int(r.headers["Retry-After"]) >= 1
            refused = True
            break
        assert r.status_code == 200, (spent, r.text)
        last = [line for line in r.text.splitlines() if line.strip()][-1]
        final = httpx.Response(200, content=last).json()
        spent += final["prompt_eval_count"] + final["eval_count"]
    assert refused and spent >= 60


def test_max_concurrent_is_enforced(limited: Fortress) -> None:
    key = quiet_key(limited, "busy", "--max-concurrent", "2")
    slow = {**auth(key), "X-Sim-Tokens": "40", "X-Sim-Rate": "10"}  # 4 s per stream
    body = {"model": "llama3.2", "prompt": "hi"}
    clients = [httpx.Client(timeout=10) for _ in range(2)]
    streams = [c.stream("POST", f"{limited.url}/api/generate", json=body, headers=slow) for c in clients]
    try:
        for s in streams:
            assert s.__enter__().status_code == 200
        third = generate(limited, key)
        assert third.status_code == 429 and "concurrent" in third.json()["error"]
    finally:
        for s, c in zip(streams, clients, strict=True):
            s.__exit__(None, None, None)
            c.close()
    end = time.monotonic() + 2
    while generate(limited, key).status_code != 200:  # closing the streams frees both slots
        assert time.monotonic() < end, "slots were not released when the clients went away"
        time.sleep(0.05)


def test_rate_is_exact_across_two_workers(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], "[proxy]\nworkers = 2\n")
    f.serve()
    try:
        key = quiet_key(f, "multi", "--rate", "10/60s")
        away_from_window_edge()
        codes, workers = [], set()
        for _ in range(30):
            with httpx.Client() as c:  # a fresh connection each time, so both workers take requests
                r = c.get(f"{f.url}/api/tags", headers=auth(key))
            codes.append(r.status_code)
            workers.add(r.headers["X-Request-ID"].split("-")[0])
        assert codes.count(200) == 10 and codes.count(429) == 20, codes
        assert codes[:10] == [200] * 10
        assert len(workers) == 2, "every request went to one worker"
    finally:
        f.stop()
