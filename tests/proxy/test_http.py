"""HTTP/1.1 on raw sockets: pipelining, HTTP/1.0, chunked bodies, 100-continue, backpressure, drain."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import Fortress, Sim


def raw(fortress: Fortress, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes, read until the proxy closes the connection."""
    with socket.create_connection(("127.0.0.1", fortress.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                piece = s.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            chunks.append(piece)
    return b"".join(chunks)


def post(path: str, key: str, body: bytes, extra: bytes = b"", close: bool = False) -> bytes:
    conn = b"Connection: close\r\n" if close else b""
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s%s\r\n%s" % (path.encode(), key.encode(), len(body), conn, extra, body)
    )


def test_pipelined_requests_are_answered_in_order(fortress: Fortress) -> None:
    key = fortress.key()
    show = post("/api/show", key, b'{"model":"llama3.2"}')
    gen = post("/api/generate", key, b'{"model":"llama3.2","prompt":"x","stream":false}', close=True)
    out = raw(fortress, show + gen)
    first, second = out.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and b'"model_info"' in first
    assert second.startswith(b"200") and b'"done":true' in second


def test_http10_client_gets_a_decoded_stream_and_a_close(fortress: Fortress) -> None:
    key = fortress.key()
    body = b'{"model":"llama3.2","prompt":"x"}'
    out = raw(fortress, post("/api/generate", key, body).replace(b"HTTP/1.1", b"HTTP/1.0", 1))
    head, _, payload = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    lines = [json.loads(x) for x in payload.splitlines() if x]
    assert lines[-1]["done"] is True and len(lines) > 3


@pytest.mark.parametrize("header", [b"Connection", b"Proxy-Connection", b"proxy-connection"])
def test_http10_client_asking_for_keep_alive_is_still_answered_as_http10(
    fortress: Fortress, header: bytes
) -> None:
    """The version is asked of the parser only when a connection header came (or the connection closes):
    an HTTP/1.0 client asking for keep-alive (llhttp reads Proxy-Connection as Connection) must still get
    an unchunked stream."""
    body = b'{"model":"llama3.2","prompt":"x"}'
    request = post("/api/generate", fortress.key(), body, header + b": keep-alive\r\n")
    head, _, payload = raw(fortress, request.replace(b"HTTP/1.1", b"HTTP/1.0", 1)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert json.loads(payload.splitlines()[-1])["done"] is True  # NDJSON lines, no chunk-size lines between


def test_trailers_of_a_chunked_body_are_dropped_and_the_next_request_is_read_whole(
    fortress: Fortress, sim: Sim
) -> None:
    """Trailer lines come after the head, once the request is decided: none reaches the backend as a
    header, none changes the request, and the next request still starts at its own target."""
    key = fortress.key()
    body = b'{"model":"llama3.2","prompt":"hi","stream":false}'
    trailers = b"X-Sum: 1\r\nX-Request-ID: forged\r\nAuthorization: Bearer nobody\r\n"
    chunked = (
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n%s\r\n"
        % (key.encode(), len(body), body, trailers)
    )
    sim.clear()
    out = raw(fortress, chunked + post("/api/show", key, b'{"model":"llama3.2"}', close=True))
    first, second = out.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200") and b'"done":true' in first and b"forged" not in first
    assert second.startswith(b"200") and b'"model_info"' in second
    (seen,) = [q for q in sim.requests() if q["path"] == "/api/generate"]
    names = {name.lower() for name, _ in seen["headers"]}
    assert "x-sum" not in names and "authorization" not in names
    assert dict((k.lower(), v) for k, v in seen["headers"])["x-request-id"] != "forged"


def test_a_target_split_across_reads_is_read_whole(fortress: Fortress) -> None:
    key = fortress.key()
    request = post("/api/show", key, b'{"model":"llama3.2"}', close=True)
    with socket.create_connection(("127.0.0.1", fortress.port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(request[: len(b"POST /api/s")])
        time.sleep(0.3)  # (two reads for the proxy; were they one, the test would still pass)
        s.sendall(request[len(b"POST /api/s") :])
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 200") and b'"model_info"' in out


def test_chunked_request_body_and_expect_continue(fortress: Fortress) -> None:
    key = fortress.key()
    body = b'{"model":"llama3.2","prompt":"hi","stream":false}'
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    head = (
        b"POST /api/generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n" % key.encode()
    )
    with socket.create_connection(("127.0.0.1", fortress.port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(chunked)
        out = b""
        while piece := s.recv(65536):
            out += piece
    assert out.startswith(b"HTTP/1.1 200") and b'"done":true' in out


def test_blob_upload_streams_through_with_an_admin_key(fortress: Fortress) -> None:
    key = fortress.key("root", "--scope", "admin")
    data = b"GGUF" + bytes(range(256)) * 40_000  # ~10 MB
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    url = f"{fortress.url}/api/blobs/{digest}"
    r = httpx.post(url, content=iter([data[:4096], data[4096:]]), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    assert httpx.head(url, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_slow_client_pauses_the_upstream_instead_of_buffering(fortress: Fortress) -> None:
    """Backpressure: a client that does not read leaves the proxy's memory flat."""
    key = fortress.key()
    proxy = psutil.Process(fortress.proc.pid)  # type: ignore[union-attr]
    before = proxy.memory_info().rss
    body = b'{"model":"llama3.2","prompt":"x"}'
    with socket.create_connection(("127.0.0.1", fortress.port), timeout=10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.sendall(post("/api/generate", key, body, extra=b"X-Sim-Tokens: 1000000\r\n"))
        time.sleep(2.0)  # the simulator could produce ~100 MB in this time
        grown = proxy.memory_info().rss - before
        s.recv(65536)
    assert grown < 24 * 1024 * 1024, f"proxy grew by {grown / 1e6:.1f} MB while the client did not read"
    assert httpx.get(f"{fortress.url}/").status_code == 200


def test_sigterm_drains_a_stream_in_flight_and_flushes_usage(fortress: Fortress) -> None:
    key = fortress.key()
    lines: list[str] = []

    def stream() -> None:
        with httpx.stream(
            "POST",
            f"{fortress.url}/api/generate",
            json={"model": "llama3.2", "prompt": "x"},
            headers={"Authorization": f"Bearer {key}", "X-Sim-Tokens": "20", "X-Sim-Rate": "20"},
        ) as r:
            lines.extend(r.iter_lines())

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(0.3)
    assert fortress.proc is not None
    fortress.proc.terminate()
    t.join(10)
    fortress.proc.wait(10)
    assert json.loads(lines[-1])["done"] is True  # the stream finished although the proxy was stopping
    with sqlite3.connect(fortress.db) as db:
        rows = db.execute("SELECT status, eval_count FROM usage WHERE path = '/api/generate'").fetchall()
    assert rows == [(200, 20)]


def test_blob_uploads_have_their_own_limit_also_when_chunked(tmp_path, sim) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import make_fortress

    f = make_fortress(
        tmp_path, [("local", sim.url)], "[proxy]\nmax_body_bytes = 1024\nmax_blob_bytes = 200000\n"
    )
    f.serve()
    try:
        key = f.key("root", "--scope", "admin")
        headers = {"Authorization": f"Bearer {key}"}
        fits = b"GGUF" + b"\0" * 100_000  # above max_body_bytes, within max_blob_bytes
        url = f"{f.url}/api/blobs/sha256:{hashlib.sha256(fits).hexdigest()}"
        assert httpx.post(url, content=fits, headers=headers).status_code == 201
        big = b"GGUF" + b"\0" * 300_000
        url = f"{f.url}/api/blobs/sha256:{hashlib.sha256(big).hexdigest()}"
        assert httpx.post(url, content=big, headers=headers).status_code == 413  # Content-Length
        try:
            r = httpx.post(url, content=iter([big[:150_000], big[150_000:]]), headers=headers)  # chunked
            assert r.status_code == 413
        except httpx.HTTPError:
            pass  # the proxy may close while the body is still being sent; nothing was stored either way
        assert httpx.head(url, headers=headers).status_code == 404
    finally:
        f.stop()
