"""HTTP-level behaviour checked with raw sockets and httpx: Host guard, faults, framing, knobs, journal."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import psutil
import pytest

from tests.conftest import Sim

GENERATE = b'{"model":"llama3.2","prompt":"hi"}'


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


def post(path: str, body: bytes, *headers: str, close: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Length: {len(body)}", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def split(response: bytes) -> tuple[bytes, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return head, body


def ndjson(body: bytes) -> Iterator[dict]:
    """Decode a chunked NDJSON body (complete or cut) into its objects."""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if length == 0:
            return
        yield json.loads(rest[:length])
        body = rest[length + 2 :]


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("evil.example", False),
        ("evil.example:11434", False),
        ("8.8.8.8", False),
        ("localhost:11434", True),
        ("10.1.2.3", True),
        ("ollama.local", True),
        ("app.localhost", True),
        ("[::1]:11434", True),
    ],
)
def test_host_check_like_ollama_on_loopback(simulator: Sim, host: str, allowed: bool) -> None:
    request = f"GET /api/version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    head, body = split(exchange(simulator.port, request))
    if allowed:
        assert head.startswith(b"HTTP/1.1 200 ") and b'"version":"0.12.0"' in body
    else:
        assert head.startswith(b"HTTP/1.1 403 ") and body == b"" and b"Content-Length: 0" in head


def test_die_after_flag_cuts_the_stream(launch_sim: Callable[..., Sim]) -> None:
    running = launch_sim("--die-after", "3", "--tokens", "20")
    head, body = split(exchange(running.port, post("/api/generate", GENERATE)))
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head
    assert [line["response"] for line in ndjson(body)] == ["The", " quick", " brown"]
    assert not body.endswith(b"0\r\n\r\n")


def test_die_after_header_and_untouched_routes(simulator: Sim) -> None:
    _, body = split(exchange(simulator.port, post("/api/generate", GENERATE, "X-Sim-Die-After: 1")))
    assert len(list(ndjson(body))) == 1
    _, whole = split(exchange(simulator.port, post("/api/generate", GENERATE)))
    lines = list(ndjson(whole))
    assert len(lines) == 13 and lines[-1]["done"] and whole.endswith(b"0\r\n\r\n")


def test_chunked_request_body_is_read(simulator: Sim) -> None:
    body = b'{"model":"qwen2.5:0.5b"}'
    pieces = (body[:5], body[5:17], body[17:])
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    request = (
        b"POST /api/show?x=1 HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        b"X-Trace: chunked-test\r\nConnection: close\r\n\r\n" + chunked
    )
    head, reply = split(exchange(simulator.port, request))
    assert head.startswith(b"HTTP/1.1 200 ") and b'"family":"qwen2"' in reply
    entry = next(e for e in simulator.requests() if ["X-Trace", "chunked-test"] in e["headers"])
    assert entry["path"] == "/api/show?x=1" and entry["method"] == "POST"
    assert entry["body_length"] == len(body)


def test_pipelined_requests_answer_in_order(simulator: Sim) -> None:
    first = post("/api/generate", GENERATE, "X-Sim-Delay-Ms: 100", "X-Sim-Tokens: 2", close=False)
    second = b"GET /api/version HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    response = exchange(simulator.port, first + second)
    assert response.index(b'"done":true') < response.index(b'{"version"')
    assert response.count(b"HTTP/1.1 200 OK") == 2


def test_head_and_probe_routes(simulator: Sim) -> None:
    head = httpx.head(f"{simulator.url}/")
    assert head.status_code == 200 and head.headers["content-length"] == "17" and head.content == b""
    assert httpx.get(f"{simulator.url}/").text == "Ollama is running"
    assert httpx.get(f"{simulator.url}/").headers["x-sim-name"] == "shared"


ERRORS = [
    ("POST", "/api/generate", b"{bad", 400,
     "invalid character 'b' looking for beginning of object key string"),
    ("POST", "/api/generate", b"", 400, "missing request body"),
    (
        "POST",
        "/api/chat",
        b'{"model":1}',
        400,
        "json: cannot unmarshal number into Go struct field ChatRequest.model of type string",
    ),
    ("POST", "/api/show", b"{}", 400, "model is required"),
    ("POST", "/api/create", b'{"model":"x"}', 400, "neither 'from' or 'files' was specified"),
    ("POST", "/api/blobs/sha256:abc", b"x", 400, "invalid digest format"),
    ("DELETE", "/api/delete", b'{"model":"ghost"}', 404, "model 'ghost' not found"),
    ("POST", "/api/generate", b'{"model":"llama3.2","prompt":"x","keep_alive":"soon"}', 400,
     'time: invalid duration "soon"'),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), ERRORS)
def test_native_error_bodies(
    simulator: Sim, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    reply = httpx.request(method, f"{simulator.url}{path}", content=body)
    assert reply.status_code == status and reply.json() == {"error": message}
    assert reply.headers["content-type"] == "application/json; charset=utf-8"


def test_openai_error_body(simulator: Sim) -> None:
    reply = httpx.post(f"{simulator.url}/v1/chat/completions", content=b"[")
    error = {"message": "unexpected EOF", "type": "invalid_request_error", "param": None, "code": None}
    assert reply.status_code == 400 and reply.json() == {"error": error}


def test_options_is_answered_by_the_host_guard(simulator: Sim) -> None:
    for path in ("/api/chat", "/anything"):
        reply = httpx.options(f"{simulator.url}{path}")
        assert reply.status_code == 204 and "content-length" not in reply.headers
    refused = httpx.options(f"{simulator.url}/api/chat", headers={"Host": "evil.example"})
    assert refused.status_code == 403


def test_unknown_path_and_wrong_method_are_plain_text(simulator: Sim) -> None:
    missing = httpx.get(f"{simulator.url}/api/nothing")
    assert missing.status_code == 404 and missing.text == "404 page not found"
    assert missing.headers["content-type"].startswith("text/plain")
    wrong = httpx.delete(f"{simulator.url}/api/tags")
    assert wrong.status_code == 405 and wrong.text == "405 method not allowed"


def test_fail_header_and_flag(simulator: Sim, launch_sim: Callable[..., Sim]) -> None:
    failed = httpx.post(f"{simulator.url}/api/generate", content=GENERATE, headers={"X-Sim-Fail": "503"})
    assert failed.status_code == 503 and "error" in failed.json()
    broken = launch_sim("--fail-before-first-byte")
    assert httpx.post(f"{broken.url}/api/generate", content=GENERATE).status_code == 500
    assert httpx.get(f"{broken.url}/api/tags").status_code == 200  # probes stay healthy
    openai = httpx.post(f"{broken.url}/v1/chat/completions", content=b"{}")
    assert openai.status_code == 500 and openai.json()["error"]["type"] == "api_error"


def test_delay_rate_and_chunk_size(simulator: Sim) -> None:
    started = time.monotonic()
    show = b'{"model":"llama3.2"}'
    httpx.post(f"{simulator.url}/api/show", content=show, headers={"X-Sim-Delay-Ms": "150"})
    assert time.monotonic() - started >= 0.15
    started = time.monotonic()
    paced = httpx.post(
        f"{simulator.url}/api/generate",
        content=GENERATE,
        headers={"X-Sim-Rate": "100", "X-Sim-Tokens": "10", "X-Sim-Chunk-Size": "4"},
    )
    elapsed = time.monotonic() - started
    lines = [json.loads(line) for line in paced.text.splitlines()]
    chunks = [line["response"] for line in lines[:-1]]
    assert chunks == ["The quick brown fox", " jumps over the lazy", " dog."]
    assert lines[-1]["eval_count"] == 10 and 0.07 <= elapsed < 2


def test_bad_knob_is_refused(simulator: Sim) -> None:
    reply = httpx.post(f"{simulator.url}/api/generate", content=GENERATE, headers={"X-Sim-Tokens": "many"})
    assert reply.status_code == 400 and reply.json() == {"error": "invalid x-sim-tokens header: 'many'"}


def test_journal_lists_and_clears(launch_sim: Callable[..., Sim]) -> None:
    running = launch_sim()
    httpx.get(f"{running.url}/api/tags", headers={"X-Forwarded-For": "203.0.113.9"})
    entries = running.requests()
    assert len(entries) == 1 and entries[0]["method"] == "GET" and entries[0]["path"] == "/api/tags"
    assert ["X-Forwarded-For", "203.0.113.9"] in [[k.title(), v] for k, v in entries[0]["headers"]]
    assert httpx.delete(f"{running.url}/_sim/requests").status_code == 200
    assert running.requests() == []


def test_expect_continue_and_blob_upload_without_memory(launch_sim: Callable[..., Sim]) -> None:
    running = launch_sim()
    process = psutil.Process(running.proc.pid)
    before = process.memory_info().rss
    piece = bytes(range(256)) * 4096  # 1 MiB
    size = 96
    digest = hashlib.sha256()
    for _ in range(size):
        digest.update(piece)
    path = f"/api/blobs/sha256:{digest.hexdigest()}"
    url = running.url + path
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size << 20}\r\n"
        sock.sendall(head.encode() + b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        for _ in range(size):
            sock.sendall(piece)
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 201 ")
    assert process.memory_info().rss - before < 24 << 20
    assert httpx.head(url).status_code == 200
    assert httpx.post(url, content=b"again").status_code == 200  # already present
