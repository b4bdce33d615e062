"""Who may scrape GET /metrics on a running proxy (DESIGN §6.5), and what a scrape costs a key: nothing.

Admin-scope keys from anywhere; addresses in `[metrics] allow` without a key, the address being the one
stage 2 trusts (X-Forwarded-For only from `trusted_proxies`); 401/403 otherwise; 404 when disabled.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress

from .conftest import parse

ELSEWHERE = """[proxy]
trusted_proxies = ["127.0.0.1/32"]
[metrics]
allow = ["10.0.0.0/8"]
"""


@pytest.fixture
def guarded(tmp_path: Path, sim: Sim) -> Iterator[Fortress]:
    """Scrapes allowed from 10.0.0.0/8 only; the test client, on loopback, is a trusted proxy."""
    f = make_fortress(tmp_path, [("local", sim.url)], ELSEWHERE)
    f.serve()
    yield f
    f.stop()


def _get(f: Fortress, key: str | None = None, forwarded_for: str | None = None) -> httpx.Response:
    headers = {}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return httpx.get(f"{f.url}/metrics", headers=headers)


def test_admin_keys_from_anywhere_addresses_in_allow_without_a_key(guarded: Fortress) -> None:
    admin = guarded.key("root", "--scope", "admin")
    user = guarded.key("alice")

    r = _get(guarded)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer realm="fortress"'
    assert "admin-scope API key" in r.json()["error"] and "[metrics] allow" in r.json()["error"]
    r = _get(guarded, user)
    assert r.status_code == 403 and "admin scope" in r.json()["error"]
    assert _get(guarded, user[:-3] + "xyz").json() == {"error": "invalid API key"}

    assert "fortress_requests_total" in _get(guarded, admin).text
    assert _get(guarded, forwarded_for="10.1.2.3").status_code == 200  # from a trusted proxy: the client
    assert _get(guarded, forwarded_for="192.0.2.7").status_code == 401
    assert _get(guarded, user, forwarded_for="10.1.2.3").status_code == 200  # allowed by address

    head = httpx.head(f"{guarded.url}/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(head.headers["content-length"]) > 1000
    post = httpx.post(f"{guarded.url}/metrics", headers={"Authorization": f"Bearer {admin}"})
    assert post.status_code == 405


def test_scrapes_use_no_rate_and_refusals_are_counted(guarded: Fortress) -> None:
    admin = guarded.key("root", "--scope", "admin", "--rate", "2/1m")  # key() spends one, waiting for it
    for _ in range(5):
        r = _get(guarded, admin)
        assert r.status_code == 200
        assert not any(h.startswith("x-ratelimit") for h in r.headers)
    auth = {"Authorization": f"Bearer {admin}"}
    assert httpx.get(f"{guarded.url}/api/tags", headers=auth).status_code == 200  # the one request left
    assert httpx.get(f"{guarded.url}/api/tags", headers=auth).status_code == 429
    s = parse(_get(guarded, admin).text)
    assert s[("fortress_limit_refusals_total", (("kind", "rate"),))] == 1
    assert s[("fortress_limit_refusals_total", (("kind", "tokens"),))] == 0
    assert s[("fortress_requests_total", (("route", "/api/tags"), ("status", "429")))] == 1
    assert s[("fortress_requests_total", (("route", "/metrics"), ("status", "200")))] == 5


def test_refused_scrapes_are_usage_rows_and_served_ones_are_not(guarded: Fortress) -> None:
    for _ in range(3):
        assert _get(guarded, forwarded_for="10.9.9.9").status_code == 200
    assert _get(guarded).status_code == 401
    end = time.monotonic() + 20
    while True:
        with sqlite3.connect(guarded.db) as db:
            rows = db.execute("SELECT status FROM usage WHERE path = '/metrics'").fetchall()
        if rows or time.monotonic() > end:
            break
        time.sleep(0.1)
    assert rows == [(401,)]


def test_disabled_metrics_are_an_unknown_path(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], "[metrics]\nenabled = false\n")
    admin = f.key("root", "--scope", "admin")
    f.serve()
    try:
        for key in (None, admin):
            r = _get(f, key)
            assert r.status_code == 404 and r.json() == {"error": "path /metrics not found"}
        assert httpx.get(f"{f.url}/api/tags", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
        assert not (f.db.parent / "metrics.shm").exists()
    finally:
        f.stop()
