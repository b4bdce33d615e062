"""Stage 5 through the real proxy: failed keys lock an address out, counted across workers (issue 9.4);
failures all look alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.conftest import auth

ATTACKER, BYSTANDER, PROBER = "127.0.0.20", "127.0.0.21", "127.0.0.22"
LIMIT = 50  # [security] auth_fail_limit default


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Fortress]:
    f = make_fortress(tmp_path_factory.mktemp("door"), [("local", sim.url)])
    f.serve()
    yield f
    f.stop()


def client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)


def wrong_secret(key: str) -> str:
    prefix, key_id, secret = key.split("_", 2)
    return f"{prefix}_{key_id}_{'x' * len(secret)}"


def unknown_prefix(key: str) -> str:
    _, _, secret = key.split("_", 2)
    return f"fk_zzzzzzzz_{secret}"


def visible(r: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Everything a client can see, except the per-request id and the clock (Date may tick between two)."""
    headers = sorted((k, v) for k, v in r.headers.items() if k.lower() not in ("x-request-id", "date"))
    return r.status_code, r.content, headers


def test_unknown_prefix_and_wrong_secret_look_the_same(door: Fortress) -> None:
    key = door.key("carol")
    with client(PROBER) as c:
        for path in ("/api/tags", "/v1/models"):
            a = c.get(f"{door.url}{path}", headers=auth(wrong_secret(key)))
            b = c.get(f"{door.url}{path}", headers=auth(unknown_prefix(key)))
            assert a.status_code == 401
            assert visible(a) == visible(b)
            assert key.split("_")[1] not in a.text


def test_sixty_bad_keys_lock_the_address_out_even_for_a_good_key(door: Fortress) -> None:
    key = door.key("dave")
    bad = [wrong_secret(key), unknown_prefix(key)]
    with client(ATTACKER) as c:
        codes = [c.get(f"{door.url}/api/tags", headers=auth(bad[i % 2])).status_code for i in range(60)]
        assert codes[:LIMIT] == [401] * LIMIT
        assert codes[LIMIT:] == [429] * (60 - LIMIT)
        locked = c.get(f"{door.url}/api/tags", headers=auth(key))
        assert locked.status_code == 429 and "failed authentication" in locked.json()["error"]
        assert int(locked.headers["Retry-After"]) > 60
        v1 = c.post(f"{door.url}/v1/chat/completions", json={}, headers=auth(key))
        assert v1.status_code == 429 and v1.json()["error"]["type"] == "rate_limit_error"
        assert c.get(f"{door.url}/").status_code == 200  # public probes need no key
    with client(BYSTANDER) as other:
        assert other.get(f"{door.url}/api/tags", headers=auth(key)).status_code == 200


def test_lockout_is_shared_by_two_workers(tmp_path: Path, sim: Sim) -> None:
    """Issue 9.4: with `workers = 2` the lockout trips after exactly the configured number of failures."""
    f = make_fortress(
        tmp_path, [("local", sim.url)], "[proxy]\nworkers = 2\n[security]\nauth_fail_limit = 7\n"
    )
    f.serve()
    try:
        key = f.key("erin")
        codes, workers = [], set()
        for _ in range(12):
            with client(ATTACKER) as c:  # a fresh connection each time, so both workers count
                r = c.get(f"{f.url}/api/tags", headers=auth(wrong_secret(key)))
            codes.append(r.status_code)
            workers.add(r.headers["X-Request-ID"].split("-")[0])
        assert codes == [401] * 7 + [429] * 5, codes
        assert len(workers) == 2, "every request went to one worker"
        for _ in range(4):  # every worker refuses the locked address, even with a good key
            with client(ATTACKER) as c:
                assert c.get(f"{f.url}/api/tags", headers=auth(key)).status_code == 429
        with client(BYSTANDER) as c:
            assert c.get(f"{f.url}/api/tags", headers=auth(key)).status_code == 200
    finally:
        f.stop()
