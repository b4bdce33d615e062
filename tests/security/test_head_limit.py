"""The 431 cut-off of `max_header_bytes` (16 KiB in these tests) through the real proxy.

The head's size is the target plus `name: value\\r\\n` for each parsed header line: it is measured on the
parsed head whether the head comes in one read or in many, and trailer lines after a chunked body count
on top of their request's head.
"""

from __future__ import annotations

from tests.conftest import Fortress
from tests.security.conftest import GENERATE, assert_serving, connect, head, read_all, send_raw

LIMIT = 16 * 1024  # the default max_header_bytes


def _sized(key: str, size: int) -> bytes:
    """A GET /api/tags head whose parsed size is exactly `size` (padded by one X-Pad line)."""
    path = "/api/tags"
    used = len(path) + len("Host") + len("gateway") + 4 + len("Authorization") + len(f"Bearer {key}") + 4
    pad = size - used - len("X-Pad") - 4
    return head("GET", path, key, "X-Pad: " + "a" * pad)


def test_a_head_at_the_limit_passes_and_one_byte_more_gets_431(gateway: Fortress, user_key: str) -> None:
    assert send_raw(gateway.port, _sized(user_key, LIMIT)).status == 200
    over = send_raw(gateway.port, _sized(user_key, LIMIT + 1))
    assert over.status == 431 and over.closed
    assert_serving(gateway, user_key)


def test_a_kept_alive_connection_s_next_head_is_cut_before_it_ends(gateway: Fortress, user_key: str) -> None:
    """The second head starts in a read that finishes nothing and never completes: still 431 and close."""
    first = head("GET", "/api/tags", user_key)
    with connect(gateway.port) as sock:
        sock.sendall(first)
        assert read_all(sock, 0.5).status == 200
        sock.sendall(_sized(user_key, LIMIT + 4096)[:-2] + b"X-More: 1\r\n")  # no blank line ends it
        reply = read_all(sock, 5.0)
    assert reply.status == 431 and reply.closed
    assert_serving(gateway, user_key)


def test_trailer_lines_count_towards_the_head(gateway: Fortress, user_key: str) -> None:
    body = GENERATE
    start = head("POST", "/api/generate", user_key, "Transfer-Encoding: chunked")
    chunked = b"%x\r\n%s\r\n0\r\n" % (len(body), body)
    small = send_raw(gateway.port, start + chunked + b"X-Trailer: ok\r\n\r\n")
    assert small.status == 200
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(200))  # ~21 KB
    big = send_raw(gateway.port, start + chunked + trailers + b"\r\n")
    assert big.status == 431 and big.closed
    assert_serving(gateway, user_key)
