"""Issue 11.3 (DESIGN §6.1): IP trust sessions. POST /auth with a key trusts the caller's address;
keyless requests from there are served as that key (usage and limits charged to it) until the TTL
ends, the key is disabled or revoked, DELETE /auth, or the admin ends it. Off by default."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.admin.conftest import csrf, start_admin
from tests.clients.conftest import new_key, serving
from tests.conftest import Fortress, Sim, stop

TRUST = "[security]\nip_trust_ttl_s = 600\n"
GEN = {"model": "llama3.2", "prompt": "hi", "stream": False}


@pytest.fixture(scope="module")
def trusting(tmp_path_factory: pytest.TempPathFactory, backend: Sim) -> Iterator[Fortress]:
    with serving(tmp_path_factory.mktemp("trust"), [("local", backend.url)], TRUST) as f:
        yield f


def until_refused(f: Fortress, timeout: float = 10.0) -> float:
    """Seconds until a keyless request is refused (the contract says within 1 s; a loaded machine may
    be slower, so the bound here is generous)."""
    start = time.monotonic()
    while httpx.get(f"{f.url}/api/tags").status_code != 401:
        assert time.monotonic() - start < timeout, "the address stayed trusted"
        time.sleep(0.02)
    return time.monotonic() - start


def usage_rows(f: Fortress, key_id: str, path: str, timeout: float = 10.0) -> list[tuple]:
    end = time.monotonic() + timeout
    while True:
        with sqlite3.connect(f.db) as db:
            rows = db.execute(
                "SELECT key_id, user_name, status FROM usage WHERE key_id = ? AND path = ?", (key_id, path)
            ).fetchall()
        if rows or time.monotonic() > end:
            return rows
        time.sleep(0.1)


def test_keyless_401_then_auth_then_served_as_the_key_until_disabled(trusting: Fortress) -> None:
    key = new_key(trusting, "jet", "--rate", "1000/1h")
    key_id = key.split("_")[1]
    assert httpx.get(f"{trusting.url}/api/tags").status_code == 401
    r = httpx.post(f"{trusting.url}/auth", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "ip": "127.0.0.1", "expires_in": 600}
    served = httpx.post(f"{trusting.url}/api/generate", json=GEN)
    assert served.status_code == 200 and served.json()["done"]
    left = int(served.headers["X-RateLimit-Remaining"])
    keyed = httpx.get(f"{trusting.url}/api/tags", headers={"X-API-Key": key})
    assert int(keyed.headers["X-RateLimit-Remaining"]) == left - 1  # one window: the key's
    assert usage_rows(trusting, key_id, "/api/generate") == [(key_id, "jet", 200)]
    trusting.cli("key", "disable", key_id)
    waited = until_refused(trusting)
    print(f"keyless refused {waited:.3f} s after the key was disabled")
    assert httpx.get(f"{trusting.url}/api/tags", headers={"X-API-Key": key}).status_code == 401


def test_delete_auth_with_the_key_or_from_the_address(trusting: Fortress) -> None:
    key = new_key(trusting, "kim")
    for ending in ({"X-API-Key": key}, {}):  # with the key; then keyless, from the trusted address
        assert httpx.post(f"{trusting.url}/auth", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(f"{trusting.url}/api/tags").status_code == 200
        r = httpx.delete(f"{trusting.url}/auth", headers=ending)
        assert r.status_code == 200 and r.json() == {"status": "ok", "ip": "127.0.0.1"}
        assert httpx.get(f"{trusting.url}/api/tags").status_code == 401
    # nothing left to end: said so
    r = httpx.delete(f"{trusting.url}/auth", headers={"X-API-Key": key})
    assert r.json() == {"status": "not_trusted", "ip": "127.0.0.1"}


def test_a_trusted_address_cannot_extend_itself_without_the_key(trusting: Fortress) -> None:
    key = new_key(trusting, "lee")
    assert httpx.post(f"{trusting.url}/auth", headers={"X-API-Key": key}).status_code == 200
    try:
        assert httpx.post(f"{trusting.url}/auth").status_code == 401
        wrong = httpx.post(f"{trusting.url}/auth", headers={"X-API-Key": key[:-3] + "zzz"})
        assert wrong.status_code == 401
        assert httpx.get(f"{trusting.url}/api/tags").status_code == 200  # still trusted
    finally:
        httpx.delete(f"{trusting.url}/auth", headers={"X-API-Key": key})


def test_revoking_the_key_ends_its_sessions(trusting: Fortress) -> None:
    key = new_key(trusting, "max")
    assert httpx.post(f"{trusting.url}/auth", headers={"X-API-Key": key}).status_code == 200
    trusting.cli("key", "revoke", key.split("_")[1])
    until_refused(trusting)
    with sqlite3.connect(trusting.db) as db:
        assert db.execute("SELECT count(*) FROM ip_trust").fetchone()[0] == 0


def test_the_session_ends_with_its_ttl(tmp_path: Path, backend: Sim) -> None:
    with serving(tmp_path, [("local", backend.url)], "[security]\nip_trust_ttl_s = 1\n") as f:
        key = new_key(f, "ttl")
        r = httpx.post(f"{f.url}/auth", headers={"X-API-Key": key})
        ends = time.monotonic() + r.json()["expires_in"]
        assert r.json()["expires_in"] == 1
        assert httpx.get(f"{f.url}/api/tags").status_code == 200
        time.sleep(max(0.0, ends - time.monotonic()) + 0.2)
        assert httpx.get(f"{f.url}/api/tags").status_code == 401


def test_every_worker_trusts_the_address_at_once(tmp_path: Path, backend: Sim) -> None:
    with serving(tmp_path, [("local", backend.url)], TRUST + "[proxy]\nworkers = 2\n") as f:
        key = new_key(f, "pool")
        assert httpx.post(f"{f.url}/auth", headers={"X-API-Key": key}).status_code == 200
        codes = [httpx.get(f"{f.url}/api/tags").status_code for _ in range(40)]  # new connections
        assert codes == [200] * 40
        assert httpx.delete(f"{f.url}/auth").status_code == 200
        until_refused(f)


def test_off_by_default(fortress: Fortress) -> None:
    key = fortress.key("nobody")
    r = httpx.post(f"{fortress.url}/auth", headers={"X-API-Key": key})
    assert r.status_code == 404 and "ip_trust_ttl_s" in r.json()["error"]
    assert httpx.get(f"{fortress.url}/api/tags").status_code == 401


def test_admin_shows_sessions_and_ends_one(trusting: Fortress) -> None:
    key = new_key(trusting, "ide")
    key_id = key.split("_")[1]
    assert httpx.post(f"{trusting.url}/auth", headers={"X-API-Key": key}).status_code == 200
    admin = start_admin(trusting)
    try:
        c, _token = admin.login()
        page = c.get("/")
        assert page.status_code == 200
        assert "Trusted addresses" in page.text and "127.0.0.1" in page.text and key_id in page.text
        assert c.post("/trust/end", data={"ip": "127.0.0.1"}).status_code == 403  # no CSRF token
        done = c.post("/trust/end", data={"ip": "127.0.0.1", "_csrf_token": csrf(page)})
        assert done.status_code == 303
        until_refused(trusting)
        assert "No address is trusted now." in c.get("/").text
        audit = c.get("/audit").text
        assert "trust.start" in audit and "trust.end" in audit
    finally:
        stop(admin.proc)
