"""Issue 11.5: Fortress's own answers keep the connection and carry Date (formatted once a second);
relayed answers keep the backend's Date and get one only when the backend sent none."""

from __future__ import annotations

import socket
import time
from email.utils import formatdate, parsedate_to_datetime

import pytest

from fortress.http.replies import date_line
from tests.clients.conftest import new_key
from tests.conftest import Fortress


class Conn:
    """One client connection on a raw socket: send a request, read exactly one response."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def ask(self, request: bytes) -> tuple[bytes, dict[bytes, list[bytes]], bytes]:
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = 0 if request.startswith(b"HEAD") else int(headers.get(b"content-length", [b"0"])[0])
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _more(self) -> None:
        piece = self.sock.recv(65536)
        if not piece:
            raise ConnectionError("the proxy closed the connection")
        self.buf += piece

    def close(self) -> None:
        self.sock.close()


def get(path: str, key: str = "", method: str = "GET") -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return f"{method} {path} HTTP/1.1\r\nHost: gateway\r\n{auth}\r\n".encode()


@pytest.fixture(scope="module")
def key(gateway: Fortress) -> str:
    return new_key(gateway, "polling")


def test_two_version_requests_on_one_connection(gateway: Fortress, key: str) -> None:
    c = Conn(gateway.port)
    try:
        first = c.ask(get("/api/version", key))
        assert first[0].startswith(b"HTTP/1.1 200") and b"connection" not in first[1]
        second = c.ask(get("/api/version", key))
        assert second[0].startswith(b"HTTP/1.1 200") and second[2] == first[2]
    finally:
        c.close()


def test_every_own_answer_keeps_the_connection_and_carries_date(gateway: Fortress, key: str) -> None:
    c = Conn(gateway.port)
    try:
        for request, status in [
            (get("/"), b"200"),
            (get("/", method="HEAD"), b"200"),
            (get("/health"), b"200"),
            (get("/api/version", key), b"200"),
            (get("/api/tags", key), b"200"),
            (get("/api/tags", key, "HEAD"), b"200"),
            (get("/api/ps", key), b"200"),
            (get("/v1/models", key), b"200"),
            (get("/v1/models/llama3.2", key), b"200"),
            (get("/api/tags"), b"401"),  # no key
            (get("/no/such/path", key), b"404"),
            (get("/api/ps", key, "DELETE"), b"405"),
        ]:
            line, headers, _ = c.ask(request)
            assert line.split()[1] == status, (request, line)
            assert b"connection" not in headers, request
            (date,) = headers[b"date"]
            assert abs(parsedate_to_datetime(date.decode()).timestamp() - time.time()) < 60
    finally:
        c.close()


def test_a_request_waiting_for_a_key_check_keeps_its_place(gateway: Fortress, key: str) -> None:
    """An unknown key waits for a configuration check before its 401; requests pipelined behind it
    wait too, and the answers leave in order."""
    c = Conn(gateway.port)
    try:
        unknown = "fk_zzzzzzzz_" + "Z" * 43
        c.sock.sendall(get("/api/tags", unknown) + get("/api/version", key) + get("/api/ps", unknown))
        assert [c.ask(b"")[0].split()[1] for _ in range(3)] == [b"401", b"200", b"401"]
    finally:
        c.close()


def test_relayed_answers_carry_exactly_one_date(gateway: Fortress, key: str) -> None:
    c = Conn(gateway.port)
    try:
        body = b'{"model":"llama3.2"}'
        request = (
            b"POST /api/show HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body)
        )
        for _ in range(2):
            line, headers, _ = c.ask(request)
            assert line.startswith(b"HTTP/1.1 200") and len(headers[b"date"]) == 1
    finally:
        c.close()


def test_date_line_is_the_current_second_in_http_format() -> None:
    before = int(time.time())
    line = date_line()
    after = int(time.time())
    assert line.startswith(b"Date: ") and line.endswith(b"\r\n")
    assert line[6:-2].decode() in {formatdate(t, usegmt=True) for t in range(before, after + 1)}
    second = int(time.time())
    again, more = date_line(), date_line()
    if int(time.time()) == second:
        assert again is more  # formatted once for the second, not per response
