"""Issue 5, stages 2-3 through the real proxy: IP deny lists, trusted proxies, per-address connection caps.

Clients bind distinct 127.0.0.x source addresses, so one proxy sees several "machines".
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.conftest import auth, connect, read_all, send_raw

DENIED, NEIGHBOUR, PROXY, CROWD, OTHER = "127.0.0.2", "127.0.0.3", "127.0.0.5", "127.0.0.7", "127.0.0.8"
CAP = 4
PROBE = b"GET / HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Fortress]:
    f = make_fortress(
        tmp_path_factory.mktemp("edge"),
        [("local", sim.url)],
        f'[proxy]\ntrusted_proxies = ["{PROXY}"]\nmax_connections_per_ip = {CAP}\n'
        '[security]\nip_deny = ["127.0.0.2/32", "10.9.0.0/16"]\n',
    )
    f.serve()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def key(edge: Fortress) -> str:
    return edge.key()


def client(source: str) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=10)


def forwarded_for(sim: Sim, request_id: str) -> str:
    for q in sim.requests():
        headers = {k.lower(): v for k, v in q["headers"]}
        if headers.get("x-request-id") == request_id:
            return headers["x-forwarded-for"]
    raise AssertionError(f"request {request_id} never reached the backend")


def show(c: httpx.Client, edge: Fortress, key: str, rid: str, xff: str | None = None) -> httpx.Response:
    headers = {**auth(key), "X-Request-ID": rid}
    if xff is not None:
        headers["X-Forwarded-For"] = xff
    return c.post(f"{edge.url}/api/show", json={"model": "llama3.2"}, headers=headers)


def test_denied_address_gets_403_and_its_neighbour_is_served(edge: Fortress, key: str) -> None:
    with client(DENIED) as denied:
        for path in ("/", "/health", "/api/tags"):
            r = denied.get(f"{edge.url}{path}", headers=auth(key))
            assert r.status_code == 403 and "not allowed" in r.json()["error"], path
        v1 = denied.get(f"{edge.url}/v1/models", headers=auth(key))
        assert v1.status_code == 403 and v1.json()["error"]["type"] == "permission_error"
    with client(NEIGHBOUR) as neighbour:
        assert neighbour.get(f"{edge.url}/api/tags", headers=auth(key)).status_code == 200


def test_forwarded_for_is_ignored_from_an_untrusted_peer(edge: Fortress, sim: Sim, key: str) -> None:
    with client(NEIGHBOUR) as c:
        # claiming to be a denied address changes nothing, and the claim is not passed on
        r = show(c, edge, key, "untrusted-1", xff="10.9.1.1")
        assert r.status_code == 200
        assert forwarded_for(sim, "untrusted-1") == NEIGHBOUR
    with client(DENIED) as c:
        # nor can a denied peer hide behind a clean address
        assert show(c, edge, key, "untrusted-2", xff="192.0.2.1").status_code == 403


def test_forwarded_for_is_honoured_from_a_trusted_proxy(edge: Fortress, sim: Sim, key: str) -> None:
    with client(PROXY) as c:
        assert show(c, edge, key, "trusted-1", xff="10.9.1.1").status_code == 403
        r = show(c, edge, key, "trusted-2", xff="198.51.100.7")
        assert r.status_code == 200
        assert forwarded_for(sim, "trusted-2") == f"198.51.100.7, {PROXY}"
        # a garbage hop falls back to the peer (the proxy itself), never to a client-chosen value
        assert show(c, edge, key, "trusted-3", xff="10.9.1.1, not-an-ip").status_code == 200


def test_connections_per_address_are_capped(edge: Fortress) -> None:
    held = [connect(edge.port, CROWD) for _ in range(CAP)]
    try:
        time.sleep(0.1)
        extra = send_raw(edge.port, PROBE, wait=1.0, source=CROWD)
        assert extra.closed and extra.data == b""
        other = send_raw(edge.port, PROBE, wait=1.0, source=OTHER)
        assert other.status == 200
        # the held connections still work
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        assert read_all(held[0], 1.0).status == 200
    finally:
        for sock in held:
            sock.close()
    end = time.monotonic() + 2
    while send_raw(edge.port, PROBE, 1.0, CROWD).status != 200:
        assert time.monotonic() < end, "the address stayed locked out after its connections closed"
        time.sleep(0.05)
