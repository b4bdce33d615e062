"""Helpers for the issue 5 acceptance tests: raw sockets from chosen loopback addresses, shared proxies.

Many checks here are about bytes httpx would never send (smuggling shapes, half-sent heads), so they
talk to the proxy over plain sockets bound to a chosen 127.0.0.x source address.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress

GENERATE = b'{"model":"llama3.2","prompt":"hi","stream":false}'


@dataclass
class Reply:
    """What came back on a raw connection: the bytes, and how the connection ended."""

    data: bytes
    closed: bool  # the proxy closed (FIN or reset) before the wait ran out
    seconds: float

    @property
    def status(self) -> int:
        """The status code of the first response, 0 when nothing came back."""
        if not self.data.startswith(b"HTTP/1."):
            return 0
        return int(self.data.split(b" ", 2)[1])

    @property
    def statuses(self) -> list[int]:
        return [
            int(line.split(b" ", 2)[1]) for line in self.data.split(b"\r\n") if line.startswith(b"HTTP/1.")
        ]


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_all(sock: socket.socket, wait: float) -> Reply:
    """Read until the peer closes or `wait` seconds pass without it closing."""
    t0 = time.monotonic()
    chunks: list[bytes] = []
    closed = False
    sock.settimeout(wait)
    try:
        while True:
            left = wait - (time.monotonic() - t0)
            if left <= 0:
                break
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                closed = True
                break
            chunks.append(data)
    except TimeoutError:
        pass
    except ConnectionResetError:
        closed = True
    return Reply(b"".join(chunks), closed, time.monotonic() - t0)


def send_raw(port: int, data: bytes, wait: float = 2.0, source: str = "127.0.0.1") -> Reply:
    with connect(port, source) as sock:
        sock.sendall(data)
        return read_all(sock, wait)


def head(method: str, path: str, key: str, *lines: str) -> bytes:
    """A request head with the key and the given extra header lines, ready for a body."""
    text = [f"{method} {path} HTTP/1.1", "Host: gateway", f"Authorization: Bearer {key}", *lines, "", ""]
    return "\r\n".join(text).encode()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_serving(f: Fortress, key: str) -> None:
    """The proxy is still up and forwards a normal request."""
    r = httpx.post(f"{f.url}/api/generate", content=GENERATE, headers=auth(key), timeout=10)
    assert r.status_code == 200, r.text
    assert f.proc is not None and f.proc.poll() is None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Fortress]:
    """One proxy with short timeouts, shared by the tests of a module (start-up costs ~1 s)."""
    f = make_fortress(
        tmp_path_factory.mktemp("gateway"),
        [("local", sim.url)],
        "[proxy]\nbody_timeout_s = 1\n",
    )
    f.serve()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def user_key(gateway: Fortress) -> str:
    return gateway.key("alice")


@pytest.fixture(scope="module")
def admin_key(gateway: Fortress) -> str:
    return gateway.key("root", "--scope", "admin")
