"""Issue 5, stage 1 through the real proxy: smuggling shapes, size limits, slow clients, mutated requests.

Every malformed shape must be answered 400 (or the connection closed) without reaching the backend, and
the proxy must keep serving afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import time

import pytest

from tests.conftest import Fortress, Sim
from tests.security.conftest import (
    GENERATE,
    assert_serving,
    connect,
    head,
    read_all,
    send_raw,
)

# A second request hidden after each shape: if any layer framed the body differently, it would surface.
_HIDDEN = b"GET /api/tags HTTP/1.1\r\nHost: gateway\r\n\r\n"
_CL = f"Content-Length: {len(GENERATE)}"

SHAPES: dict[str, tuple[list[str], bytes]] = {
    "content-length and transfer-encoding": (
        [_CL, "Transfer-Encoding: chunked"],
        b"0\r\n\r\n" + _HIDDEN,
    ),
    "transfer-encoding then content-length": (
        ["Transfer-Encoding: chunked", "Content-Length: 5"],
        b"0\r\n\r\n" + _HIDDEN,
    ),
    "repeated content-length": ([_CL, _CL], GENERATE),
    "conflicting content-length": ([_CL, "Content-Length: 5"], GENERATE),
    "content-length list": ([f"Content-Length: {len(GENERATE)}, {len(GENERATE)}"], GENERATE),
    "negative content-length": (["Content-Length: -1"], GENERATE),
    "signed content-length": ([f"Content-Length: +{len(GENERATE)}"], GENERATE),
    "hex content-length": (["Content-Length: 0x32"], GENERATE),
    "invalid chunk size": (["Transfer-Encoding: chunked"], b"zz\r\n" + GENERATE + b"\r\n0\r\n\r\n"),
    "negative chunk size": (["Transfer-Encoding: chunked"], b"-5\r\nhello\r\n0\r\n\r\n"),
    "overflowing chunk size": (["Transfer-Encoding: chunked"], b"f" * 20 + b"\r\nhello\r\n0\r\n\r\n"),
    "obsolete line folding": (["X-Note: a", " folded", _CL], GENERATE),
    "folded transfer-encoding": ([_CL, "Transfer-Encoding: identity", "\tchunked"], GENERATE),
    "unknown transfer-encoding": (["Transfer-Encoding: gzip, chunked"], b"0\r\n\r\n" + _HIDDEN),
    "identity transfer-encoding": (["Transfer-Encoding: identity", _CL], GENERATE),
    "lookalike transfer-encoding": (["Transfer-Encoding: xchunked"], b"0\r\n\r\n" + _HIDDEN),
    "repeated transfer-encoding": (
        ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n" + _HIDDEN,
    ),
    "space before colon": (["Transfer-Encoding : chunked", "Content-Length: 5"], b"0\r\n\r\n" + _HIDDEN),
    "NUL in a header": (["X-Note: a\x00b", _CL], GENERATE),
    "bare CR in a header": (["X-Note: a\rb", _CL], GENERATE),
}


def _forwarded(sim: Sim, path: str) -> list[dict]:
    return [q for q in sim.requests() if q["path"] == path and q["method"] == "POST"]


@pytest.mark.parametrize("shape", SHAPES)
def test_smuggling_shape_is_refused_and_never_forwarded(
    gateway: Fortress, sim: Sim, user_key: str, shape: str
) -> None:
    lines, body = SHAPES[shape]
    sim.clear()
    reply = send_raw(gateway.port, head("POST", "/api/generate", user_key, *lines) + body)
    assert reply.closed, f"{shape}: the connection stayed open"
    assert reply.statuses in ([400], []), f"{shape}: {reply.data[:300]!r}"
    assert not _forwarded(sim, "/api/generate")
    assert_serving(gateway, user_key)


def test_streamed_upload_keeps_its_framing_to_the_backend(
    gateway: Fortress, sim: Sim, admin_key: str
) -> None:
    """A sized upload streams through: the backend must see its Content-Length, so bytes in the body
    can never be read as a second request on the pooled backend connection."""
    body = (
        b"POST /api/pull HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n"
        + b'{"model":"evil.example/x","insecure":true}'
    )
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    sim.clear()
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", f"/api/blobs/{digest}", admin_key, f"Content-Length: {len(body)}"))
        time.sleep(0.2)  # the head is forwarded before the body arrives
        sock.sendall(body)
        reply = read_all(sock, 1.5)
    assert reply.status == 201, reply.data[:300]
    assert reply.statuses == [201]
    seen = sim.requests()
    uploads = [q for q in seen if q["path"].startswith("/api/blobs/")]
    assert len(uploads) == 1 and uploads[0]["body_length"] == len(body)
    assert not [q for q in seen if q["path"] == "/api/pull"]


def test_chunked_upload_with_a_bad_chunk_is_cut(gateway: Fortress, admin_key: str) -> None:
    data = head("POST", "/api/blobs/sha256:" + "a" * 64, admin_key, "Transfer-Encoding: chunked")
    reply = send_raw(gateway.port, data + b"5\r\nhello\r\nzz\r\n" + _HIDDEN)
    assert reply.closed and reply.statuses in ([400], [])


def test_200_kb_header_gets_431(gateway: Fortress, user_key: str) -> None:
    data = head("GET", "/api/tags", user_key, "X-Big: " + "a" * 200_000)
    reply = send_raw(gateway.port, data)
    assert reply.status == 431 and reply.closed
    many = head("GET", "/api/tags", user_key, *(f"X-H{i}: {'b' * 60}" for i in range(400)))
    assert send_raw(gateway.port, many).status == 431
    assert_serving(gateway, user_key)


def test_10_gib_content_length_gets_413_before_any_body(gateway: Fortress, user_key: str) -> None:
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/api/generate", user_key, f"Content-Length: {10 << 30}"))
        reply = read_all(sock, 1.0)
    assert reply.status == 413 and reply.closed and reply.seconds < 0.5
    assert b"too large" in reply.data


def test_half_sent_head_is_closed_after_header_timeout(gateway: Fortress) -> None:
    # header_timeout_s = 2 (tests/conftest.py); the sweeper runs every 0.5 s
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        reply = read_all(sock, 5.0)
    assert reply.closed and 1.5 < reply.seconds < 3.5, reply
    assert reply.statuses in ([408], [])


def test_trickled_head_is_still_closed_after_header_timeout(gateway: Fortress) -> None:
    """Slowloris: a byte every 0.3 s does not extend the header deadline."""
    with connect(gateway.port) as sock:
        sock.sendall(b"GET /api/tags HTTP/1.1\r\n")
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 5:
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            reply = read_all(sock, 0.3)
            if reply.closed:
                closed = True
                break
    assert closed and time.monotonic() - t0 < 3.5


def test_slow_body_is_closed_after_body_timeout(gateway: Fortress, user_key: str) -> None:
    # body_timeout_s = 1
    with connect(gateway.port) as sock:
        sock.sendall(head("POST", "/api/generate", user_key, "Content-Length: 100") + b'{"model"')
        reply = read_all(sock, 4.0)
    assert reply.closed and 0.8 < reply.seconds < 2.5, reply
    assert reply.statuses in ([408], [])


def test_slow_streamed_upload_is_closed_after_body_timeout(gateway: Fortress, admin_key: str) -> None:
    """Uploads stream to the backend as they come; a stalled one must not hold both connections."""
    with connect(gateway.port) as sock:
        path = "/api/blobs/sha256:" + "a" * 64
        sock.sendall(head("POST", path, admin_key, "Content-Length: 1000") + b"abc")
        reply = read_all(sock, 4.0)
    assert reply.closed and reply.seconds < 2.5, reply


# -- mutated requests ---------------------------------------------------------------------------------

_SEEDS = [
    b"GET /api/tags HTTP/1.1\r\nHost: gateway\r\n{auth}\r\n\r\n",
    b"POST /api/generate HTTP/1.1\r\nHost: gateway\r\n{auth}\r\nContent-Length: 49\r\n\r\n" + GENERATE,
    b"POST /api/chat HTTP/1.1\r\nHost: gateway\r\n{auth}\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'2d\r\n{"model":"llama3.2","messages":[],"stream":false}\r\n0\r\n\r\n',
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n{auth}\r\nContent-Type: application/json\r\n"
    b'Content-Length: 47\r\n\r\n{"model":"llama3.2","messages":[{"role":"user"}]}',
    b"HEAD /api/blobs/sha256:" + b"0" * 64 + b" HTTP/1.1\r\nHost: gateway\r\n{auth}\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
]
_TOKENS = [
    b"\r",
    b"\n",
    b"\r\n",
    b":",
    b" ",
    b"\t",
    b"\x00",
    b",",
    b"-",
    b"0",
    b"9",
    b"f",
    b"%",
    b"/",
    b"..",
    b"\xff",
]
_HEADERS = [
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 3\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: Upgrade\r\nUpgrade: websocket\r\n",
    b"X-Forwarded-For: 10.0.0.1, garbage\r\n",
    b"X-Request-ID: \x01\x02\r\n",
    b"X-Fortress-Backend: nowhere\r\n",
    b"Authorization: Bearer fk_abcdefgh_" + b"x" * 40 + b"\r\n",
    b"X-API-Key: \r\n",
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(at, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[at:at] = rng.choice(_TOKENS)
        elif op == 2 and buf:
            del buf[at : at + rng.randint(1, 8)]
        elif op == 3:
            line = buf.find(b"\r\n") + 2
            buf[line:line] = rng.choice(_HEADERS)
        elif op == 4:
            lines = bytes(buf).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            buf = bytearray(b"\r\n".join(lines))
        else:
            buf = buf[: rng.randrange(len(buf) + 1)]
    return bytes(buf)


async def _one(port: int, data: bytes, source: str, guard: asyncio.Semaphore) -> bytes:
    async with guard:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            writer.write(data)
            out = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                out = await asyncio.wait_for(reader.read(-1), 4.0)
            return out
        finally:
            writer.close()


async def test_300_mutated_requests_give_no_500_and_the_proxy_stays_up(fortress: Fortress) -> None:
    f = fortress
    key = await asyncio.to_thread(f.key, "fuzz")
    rng = random.Random(20261122)
    auth = f"Authorization: Bearer {key}".encode()
    cases = [_mutate(rng, rng.choice(_SEEDS).replace(b"{auth}", auth)) for _ in range(300)]
    guard = asyncio.Semaphore(40)
    replies = await asyncio.gather(*(_one(f.port, c, "127.0.0.1", guard) for c in cases))
    bad = [(c, r[:200]) for c, r in zip(cases, replies, strict=True) if b" 500 " in r.split(b"\r\n", 1)[0]]
    assert not bad, bad[:3]
    assert sum(r.startswith(b"HTTP/1.1 ") for r in replies) > 200  # most mutations still got an answer
    await asyncio.to_thread(assert_serving, f, key)
    logs = await asyncio.to_thread(f.stop)
    assert "Traceback" not in logs and "internal error" not in logs
