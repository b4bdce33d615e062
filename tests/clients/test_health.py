"""Issue 11.7 (DESIGN §6.5): GET /health counts healthy backends for everyone, answers 503 when none
is healthy, and gives admin-scope keys per-backend detail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clients.conftest import new_key, serving
from tests.conftest import Fortress, Sim

FAST_HEALTH = "[routing]\nhealth_interval_s = 0.2\nbreaker_threshold = 1\nconnect_timeout_s = 1\n"
DEAD = "http://127.0.0.1:9"


def eventually(f: Fortress, expected: tuple[int, dict], timeout: float = 20.0) -> httpx.Response:
    """/health once it says `expected` (health checks run in the background)."""
    end = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{f.url}/health")
        if (r.status_code, r.json()) == expected or time.monotonic() > end:
            assert (r.status_code, r.json()) == expected
            return r
        time.sleep(0.1)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory, backend: Sim) -> Iterator[Fortress]:
    """One live backend, one that never answers."""
    with serving(
        tmp_path_factory.mktemp("health"), [("live", backend.url), ("dead", DEAD)], FAST_HEALTH
    ) as f:
        yield f


def test_public_counts(gateway: Fortress) -> None:
    r = httpx.get(f"{gateway.url}/health")
    assert (r.status_code, r.json()) == (200, {"status": "ok", "backends_healthy": 1, "backends_total": 1})
    head = httpx.head(f"{gateway.url}/health")
    assert head.status_code == 200 and head.content == b""


def test_a_dead_backend_is_counted_out(mixed: Fortress) -> None:
    eventually(mixed, (200, {"status": "ok", "backends_healthy": 1, "backends_total": 2}))


def test_detail_for_admin_scope_keys_only(mixed: Fortress) -> None:
    eventually(mixed, (200, {"status": "ok", "backends_healthy": 1, "backends_total": 2}))
    user = httpx.get(f"{mixed.url}/health", headers={"X-API-Key": new_key(mixed, "u")}).json()
    assert "backends" not in user
    admin = new_key(mixed, "root", "--scope", "admin")
    body = httpx.get(f"{mixed.url}/health", headers={"Authorization": f"Bearer {admin}"}).json()
    assert body["backends_healthy"] == 1 and body["backends_total"] == 2
    detail = {b["name"]: b for b in body["backends"]}
    assert set(detail) == {"live", "dead"}
    live, dead = detail["live"], detail["dead"]
    assert live["kind"] == "ollama" and live["up"] is True and live["breaker"] == "closed"
    assert live["models"] == 3 and live["outstanding"] == 0 and live["last_check_s"] >= 0
    assert dead["up"] is False and dead["breaker"] != "closed" and dead["models"] == 0
    assert dead["last_error"]


def test_a_wrong_key_is_refused_not_ignored(mixed: Fortress) -> None:
    r = httpx.get(f"{mixed.url}/health", headers={"X-API-Key": "fk_nothere1_" + "x" * 43})
    assert r.status_code == 401


def test_503_when_no_backend_is_healthy(tmp_path: Path) -> None:
    with serving(tmp_path, [("dead", DEAD)], FAST_HEALTH) as f:
        r = eventually(f, (503, {"status": "unavailable", "backends_healthy": 0, "backends_total": 1}))
        assert r.headers["content-type"].startswith("application/json")


def test_public_even_for_a_locked_out_address(tmp_path: Path, backend: Sim) -> None:
    """A health check from an address locked out by bad keys (a container's own) still gets its answer."""
    with serving(tmp_path, [("local", backend.url)], "[security]\nauth_fail_limit = 2\n") as f:
        for _ in range(2):
            httpx.get(f"{f.url}/api/tags", headers={"X-API-Key": "fk_nothere1_" + "x" * 43})
        assert httpx.get(f"{f.url}/api/tags").status_code == 429
        assert httpx.get(f"{f.url}/health").json()["status"] == "ok"
