"""Issue 9 §4 holes on the hot path, through the real proxy process: a backend overrunning its
Content-Length, client-supplied X-Real-IP/Forwarded, and bytes after a request that closes the
connection."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.recorder import Recorder, _Handler
from tests.sim.test_wire import exchange as raw_exchange

DECLARED = 1 << 20  # a 1 MiB body, as in the report
SURPLUS = b"SURPLUS!" * 8192  # 64 KiB the backend should never have sent


class _Overrun(_Handler):
    """Answers generate with a declared 1 MiB body and 64 KiB more, the surplus arriving as the client
    asks in X-Overrun: with the head, right after the body, or after a pause on a later read."""

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        mode = self.headers.get("X-Overrun", "head")
        body = b"x" * DECLARED
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % DECLARED
        if mode == "head":
            self.wfile.write(head + body[:1000] + body[1000:] + SURPLUS)  # all in one write
        elif mode == "body":
            self.wfile.write(head)
            self.wfile.flush()
            time.sleep(0.05)
            self.wfile.write(body + SURPLUS)
        else:  # "later": the body complete first, the surplus on its own read afterwards
            self.wfile.write(head + body)
            self.wfile.flush()
            time.sleep(0.2)
            self.wfile.write(SURPLUS)
        self.wfile.flush()


@pytest.fixture
def overrunning(tmp_path: Path) -> Iterator[tuple[Fortress, Recorder]]:
    server = Recorder()
    server.RequestHandlerClass = _Overrun
    server.connections = 0  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    f = make_fortress(tmp_path, [("bad", server.url)])
    f.serve()
    yield f, server
    f.stop()
    server.shutdown()
    server.server_close()


def generate_request(key: str, version: bytes = b"HTTP/1.1", extra: bytes = b"", tail: bytes = b"") -> bytes:
    body = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()
    return (
        b"POST /api/generate " + version + b"\r\nHost: x\r\nAuthorization: Bearer " + key.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n"
        % len(body)
        + extra
        + b"\r\n"
        + body
        + tail
    )


@pytest.mark.parametrize("mode", ["head", "body", "later"])
def test_a_backend_overrunning_its_content_length_is_cut_at_the_declared_length(
    overrunning: tuple[Fortress, Recorder], mode: str
) -> None:
    f, server = overrunning
    key = f.key()
    answer = raw_exchange(
        f.port, generate_request(key, extra=b"Connection: close\r\nX-Overrun: " + mode.encode() + b"\r\n")
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: %d" % DECLARED in head
    assert body == b"x" * DECLARED  # exactly the declared bytes: nothing of the surplus
    before = server.connections  # type: ignore[attr-defined]
    r = httpx.post(
        f"{f.url}/api/generate",
        json={"model": "llama3.2", "prompt": "again", "stream": False},
        headers={"Authorization": f"Bearer {key}", "X-Overrun": "head"},
    )
    assert r.status_code == 200 and len(r.content) == DECLARED
    assert server.connections == before + 1  # type: ignore[attr-defined]  # the overrun connection was dropped


def test_client_forwarding_headers_are_replaced_by_the_address_fortress_trusts(
    fortress: Fortress, sim: Sim
) -> None:
    key = fortress.key()
    lies = {"X-Real-IP": "6.6.6.6", "Forwarded": "for=6.6.6.6;proto=https", "X-Forwarded-For": "6.6.6.6"}
    sim.clear()
    r = httpx.post(
        f"{fortress.url}/api/show",
        json={"model": "llama3.2"},
        headers={"Authorization": f"Bearer {key}", **lies},
    )
    assert r.status_code == 200
    shown = [q for q in sim.requests() if q["path"] == "/api/show"]  # not the poller's probes
    sent = [(k.lower(), v) for k, v in shown[-1]["headers"]]
    assert [v for k, v in sent if k == "x-real-ip"] == ["127.0.0.1"]
    assert [v for k, v in sent if k == "forwarded"] == ["for=127.0.0.1"]
    assert [v for k, v in sent if k == "x-forwarded-for"] == ["127.0.0.1"]


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_used(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], '[proxy]\ntrusted_proxies = ["127.0.0.1/32"]\n')
    f.serve()
    try:
        key = f.key()
        sim.clear()
        headers = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "2001:db8::7", "X-Real-IP": "6.6.6.6"}
        assert httpx.post(f"{f.url}/api/show", json={"model": "llama3.2"}, headers=headers).status_code == 200
        shown = [q for q in sim.requests() if q["path"] == "/api/show"]  # not the poller's probes
        sent = {k.lower(): v for k, v in shown[-1]["headers"]}
        assert sent["x-real-ip"] == "2001:db8::7" and sent["forwarded"] == 'for="[2001:db8::7]"'
        assert sent["x-forwarded-for"] == "2001:db8::7, 127.0.0.1"
    finally:
        f.stop()


@pytest.mark.parametrize(
    ("version", "extra"),
    [(b"HTTP/1.0", b""), (b"HTTP/1.1", b"Connection: close\r\n")],
    ids=["http10", "close"],
)
def test_bytes_after_a_closing_request_are_ignored_and_the_request_is_served_and_accounted(
    tmp_path: Path, sim: Sim, version: bytes, extra: bytes
) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)])
    f.serve()
    try:
        key = f.key()
        sim.clear()
        smuggled = b"POST /api/pull HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        answer = raw_exchange(f.port, generate_request(key, version, extra, tail=smuggled))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1 ") == 1
        done = json.loads(body)
        assert done["done"] is True
        sent = [r["path"] for r in sim.requests() if r["method"] != "GET"]  # not the poller's probes
        assert sent == ["/api/generate"]  # the trailing bytes went nowhere
    finally:
        f.stop()  # flushes usage
    with sqlite3.connect(f.db) as db:
        rows = db.execute(
            "SELECT status, prompt_eval_count, eval_count FROM usage WHERE path = '/api/generate'"
        )
        assert rows.fetchall() == [(200, done["prompt_eval_count"], done["eval_count"])]
