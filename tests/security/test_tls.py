"""Issue 5, TLS through the real proxy: a certificate from `fortress cert`, HTTPS for real clients,
nothing useful for plain HTTP on the TLS port, and no TLS 1.0/1.1."""

from __future__ import annotations

import socket
import ssl
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import pytest

from tests.conftest import Fortress, Sim, make_fortress
from tests.security.conftest import auth, read_all


@dataclass
class Tls:
    f: Fortress
    cert: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.f.port}"

    def verify(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def https_fortress(home: Path, sim: Sim) -> Tls:
    out = home / "tls"
    f = make_fortress(
        home, [("local", sim.url)], f'[proxy]\ntls_cert = "{out}/cert.pem"\ntls_key = "{out}/key.pem"\n'
    )
    f.cli("cert", "--host", "localhost", "--out", str(out))
    f.serve()
    return Tls(f, out / "cert.pem")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Tls]:
    t = https_fortress(tmp_path_factory.mktemp("tls"), sim)
    yield t
    t.f.stop()


def handshake(port: int, version: ssl.TLSVersion) -> str:
    """Offer exactly one protocol version (old ones allowed on our side); the negotiated version."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        context.minimum_version = context.maximum_version = version
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    with sock, context.wrap_socket(sock, server_hostname="localhost") as conn:
        return conn.version() or ""


def test_https_with_the_generated_certificate(tls: Tls) -> None:
    r = httpx.get(f"{tls.url}/", verify=tls.verify())
    assert r.status_code == 200 and r.text == "Ollama is running"
    with pytest.raises(httpx.ConnectError):  # a self-signed certificate is not trusted by default
        httpx.get(f"{tls.url}/")


def test_real_client_over_https(tls: Tls) -> None:
    # Fortress.key() probes over plain HTTP, so the key is made with the CLI and polled for here
    tls.f.cli("user", "add", "tls")
    key = tls.f.cli("key", "create", "--user", "tls").stdout.split()[0]
    client = ollama.Client(host=tls.url, headers=auth(key), verify=tls.verify())
    for _ in range(40):  # the proxy reloads keys within a second
        try:
            names = [m.model for m in client.list().models]
            break
        except ollama.ResponseError as exc:
            assert exc.status_code == 401
            time.sleep(0.05)
    assert "llama3.2:latest" in names
    reply = client.generate(model="llama3.2", prompt="hi")
    assert reply.done and reply.response
    client._client.close()


def test_plain_http_on_the_tls_port_gets_nothing_useful(tls: Tls) -> None:
    with socket.create_connection(("127.0.0.1", tls.f.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = read_all(sock, 2.0)
    assert reply.closed
    assert b"Ollama is running" not in reply.data and not reply.data.startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_old_tls_versions_are_refused(tls: Tls, version: str) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(tls.f.port, getattr(ssl.TLSVersion, version))


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_current_tls_versions_are_accepted(tls: Tls, version: str) -> None:
    assert handshake(tls.f.port, getattr(ssl.TLSVersion, version)) == version.replace("_", ".")


def test_graceful_stop_does_not_wait_for_idle_https_clients(tmp_path: Path, sim: Sim) -> None:
    """An idle keep-alive client that never answers close_notify must not hold the drain (30 s)."""
    t = https_fortress(tmp_path, sim)
    raw = socket.create_connection(("127.0.0.1", t.f.port))
    with t.verify().wrap_socket(raw, server_hostname="localhost") as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        logs = t.f.stop()  # the client stays connected and silent
        assert time.monotonic() - t0 < 8
    assert "stopped" in logs
