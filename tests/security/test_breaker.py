"""Issue 9.3 through the real proxy: one key cannot take the only backend away from everyone.

A backend's 500 with an error body is the request's own answer: relayed as is, not counted by the
circuit breaker. Streams the backend cuts do count, but a lone backend whose health check passes keeps
serving while its breaker is open. A backend that is really down opens its breaker and is refused at
once, then comes back when it does.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress, start_sim
from tests.security.conftest import GENERATE, auth


@pytest.fixture
def lone(tmp_path: Path) -> Iterator[tuple[Fortress, Sim]]:
    sim = start_sim(name="lone")
    f = make_fortress(tmp_path, [("lone", sim.url)])
    try:
        f.serve()  # inside: a proxy that never listened, and the simulator, are stopped too
        yield f, sim
    finally:
        f.stop()
        sim.stop()


def breaker(f: Fortress, want: str, timeout: float = 10.0) -> dict:
    """The lone backend's breaker as the proxy last published it (about once a second), once in `want`."""
    end = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f.db) as db:
            rows = db.execute("SELECT detail FROM proxy_stats").fetchall()
        states = [json.loads(detail)["backends"][0] for (detail,) in rows if detail]
        if states and states[0]["state"] == want:
            return states[0]
        assert time.monotonic() < end, f"the breaker never became {want}: {states}"
        time.sleep(0.2)


def generate(f: Fortress, key: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{f.url}/api/generate", content=GENERATE, headers={**auth(key), **headers}, timeout=15)


def test_backend_500s_with_error_bodies_do_not_take_the_backend_away(lone: tuple[Fortress, Sim]) -> None:
    f, _ = lone
    careless, other = f.key("careless"), f.key("other")
    for _ in range(5):
        r = generate(f, careless, **{"X-Sim-Fail": "1"})
        assert r.status_code == 500 and r.json()["error"], r.text  # the backend's own answer, as is
    assert generate(f, other).status_code == 200
    state = breaker(f, "closed")
    assert state["consecutive_failures"] == 0


def test_cut_streams_open_the_breaker_but_a_lone_backend_that_is_up_keeps_serving(
    lone: tuple[Fortress, Sim],
) -> None:
    f, _ = lone
    careless, other = f.key("careless"), f.key("other")
    body = {"model": "llama3.2", "prompt": "hi"}
    for _ in range(5):
        r = httpx.post(
            f"{f.url}/api/generate", json=body, headers={**auth(careless), "X-Sim-Die-After": "2"}, timeout=15
        )
        assert r.status_code == 200 and '"error"' in r.text.strip().splitlines()[-1]
    state = breaker(f, "open")
    assert state["probe_ok"], state
    for _ in range(3):
        assert generate(f, other).status_code == 200


def test_a_dead_backend_opens_the_breaker_and_comes_back(lone: tuple[Fortress, Sim]) -> None:
    f, sim = lone
    key = f.key("alice")
    assert generate(f, key).status_code == 200
    sim.stop()
    messages = []
    end = time.monotonic() + 15
    while "no healthy backend is available" not in messages:
        r = generate(f, key)
        assert r.status_code == 503, r.text
        messages.append(r.json()["error"])
        assert time.monotonic() < end, messages
        time.sleep(0.05)
    state = breaker(f, "open")
    assert not state["probe_ok"], state
    sim.start()  # the same port: the backend comes back
    end = time.monotonic() + 20
    while generate(f, key).status_code != 200:
        assert time.monotonic() < end, "the backend never came back"
        time.sleep(0.2)
