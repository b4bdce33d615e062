"""Issue 12.5: a certificate set in /settings is served by the running proxy to new connections, no restart.

Real processes: the simulator, `fortress serve` (two workers) and `fortress admin`, both HTTPS; the
certificate a client sees is read from the TLS handshake itself.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from admin import relay, tlsinfo
from fortress.cli import self_signed
from fortress.config import Config, load
from fortress.proxy.tls import LiveTls, TlsFiles, effective_files, fingerprint, setting_value
from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, sign_in, start_admin
from tests.conftest import Fortress, Sim, make_fortress, stop

CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
MODEL = "qwen2.5:0.5b"  # one of the simulator's default models


def no_verify() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served(port: int) -> str:
    """SHA-256 of the certificate a new TLS connection to `port` is shown."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    with sock, no_verify().wrap_socket(sock, server_hostname="localhost") as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def eventually(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def all_new_connections_see(port: int, wanted: str, n: int = 12) -> bool:
    """n fresh connections in a row (spread over the workers by SO_REUSEPORT) all see `wanted`."""
    return all(served(port) == wanted for _ in range(n))


def write_pair(folder: Path, host: str = "localhost") -> tuple[Path, Path, str]:
    cert_pem, key_pem = self_signed(host)
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    return cert, key, fingerprint(cert_pem)


@dataclass
class Stack:
    home: Fortress
    admin_port: int
    original: str  # fingerprint of config.toml's pair
    key: str

    @property
    def admin_url(self) -> str:
        return f"https://127.0.0.1:{self.admin_port}"

    def login(self) -> tuple[httpx.Client, str]:
        c = httpx.Client(base_url=self.admin_url, verify=False, timeout=10, follow_redirects=False)
        token = CSRF_FIELD.search(c.get("/login").text).group(1)  # type: ignore[union-attr]
        r = c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
        assert r.status_code == 303, r.text
        return c, token


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("live-tls")
    cert, key, original = write_pair(tmp / "config-tls")
    home = make_fortress(
        tmp, [("local", sim.url)], f'[proxy]\nworkers = 2\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    home.cli("user", "add", "tls")
    key = home.cli("key", "create", "--user", "tls").stdout.split()[0]
    home.serve()
    admin = start_admin(home)
    yield Stack(home, admin.port, original, key)
    stop(admin.proc)
    home.stop()


def upload(c: httpx.Client, token: str, cert_pem: bytes, key_pem: bytes) -> httpx.Response:
    return c.post(
        "/settings/tls",
        data={"_csrf_token": token},
        files={"cert_file": ("cert.pem", cert_pem), "key_file": ("key.pem", key_pem)},
    )


def test_an_uploaded_certificate_reaches_new_connections_and_old_ones_keep_working(stack: Stack) -> None:
    port = stack.home.port
    auth = {"Authorization": f"Bearer {stack.key}"}
    before = http.client.HTTPSConnection("127.0.0.1", port, context=no_verify(), timeout=10)

    def show() -> int:  # a proxied request: the connection stays open (local replies may close it)
        before.request("POST", "/api/show", body=b'{"model": "%s"}' % MODEL.encode(), headers=auth)
        response = before.getresponse()
        response.read()
        return response.status

    assert eventually(lambda: show() == 200)  # the proxy has loaded the new key
    old = hashlib.sha256(before.sock.getpeercert(binary_form=True)).hexdigest()  # type: ignore[union-attr]
    tls_socket = before.sock
    assert all_new_connections_see(port, old)

    c, token = stack.login()
    cert_pem, key_pem = self_signed("localhost")
    new = fingerprint(cert_pem)
    r = upload(c, token, cert_pem, key_pem)
    assert r.status_code == 200 and "Certificate applied" in r.text, r.text
    assert new in r.text  # the page shows the fingerprint in force

    assert eventually(lambda: all_new_connections_see(port, new)), "the proxy never served the new pair"
    assert show() == 200  # the connection opened before the change is still served...
    assert before.sock is tls_socket  # ...on the very same TLS session, with the old certificate
    assert hashlib.sha256(tls_socket.getpeercert(binary_form=True)).hexdigest() == old  # type: ignore[union-attr]
    before.close()
    assert served(stack.admin_port) == new  # the admin's own HTTPS listener follows at once
    assert eventually(lambda: "no restart needed" in c.get("/settings/tls/status").text)
    # stored next to the database, the key readable by its owner only
    stored = sorted((stack.home.db.parent / "tls").glob("uploaded-*-key.pem"))
    assert stored and all(os.stat(p).st_mode & 0o777 == 0o600 for p in stored)


def test_a_bad_pair_is_refused_and_changes_nothing(stack: Stack) -> None:
    c, token = stack.login()
    current = served(stack.home.port)
    cert_pem, _ = self_signed("localhost")
    _, other_key = self_signed("localhost")
    r = upload(c, token, cert_pem, other_key)
    assert r.status_code == 400 and "does not match" in r.text
    r = upload(c, token, b"not a certificate", other_key)
    assert r.status_code == 400 and "not a valid PEM" in r.text
    r = c.post("/settings/tls", data={"_csrf_token": token, "cert_path": "cert.pem", "key_path": "key.pem"})
    assert r.status_code == 400 and "absolute paths" in r.text
    assert c.post("/settings/tls", files={"cert_file": ("c", cert_pem)}).status_code == 403  # no CSRF token
    time.sleep(1.0)  # a reload tick or four: nothing may have changed
    assert served(stack.home.port) == current


def test_a_certificate_renewed_in_place_is_picked_up(stack: Stack, tmp_path: Path) -> None:
    cert, key, first = write_pair(tmp_path / "renewing")
    c, token = stack.login()
    r = c.post("/settings/tls", data={"_csrf_token": token, "cert_path": str(cert), "key_path": str(key)})
    assert r.status_code == 200, r.text
    assert eventually(lambda: all_new_connections_see(stack.home.port, first))
    # certbot-style renewal: the files change, the database does not
    cert_pem, key_pem = self_signed("localhost")
    for path, data in ((key, key_pem), (cert, cert_pem)):
        tmp = path.with_suffix(".new")
        tmp.write_bytes(data)
        tmp.replace(path)
    assert eventually(lambda: all_new_connections_see(stack.home.port, fingerprint(cert_pem)))


def test_going_back_to_config_toml(stack: Stack) -> None:
    c, token = stack.login()
    assert c.post("/settings/tls/reset", data={"_csrf_token": token}).status_code == 303
    assert eventually(lambda: all_new_connections_see(stack.home.port, stack.original))
    page = c.get("/settings").text
    assert "from config.toml" in page and "Use config.toml&#39;s certificate again" not in page


@pytest.mark.browser
def test_in_chromium_an_uploaded_certificate_is_served(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    cert, key, wanted = write_pair(tmp_path / "browser")
    context = browser.new_context(base_url=stack.admin_url, ignore_https_errors=True)
    page = context.new_page()
    sign_in(page)
    page.goto("/settings#tls")
    page.get_by_label("Certificate (PEM) to upload").set_input_files(str(cert))
    page.get_by_label("Private key (PEM) to upload").set_input_files(str(key))
    page.get_by_role("button", name="Check and apply certificate").click()
    expect(page.get_by_role("status")).to_contain_text("Certificate applied")
    expect(page.locator("#tls .fingerprint")).to_have_text(wanted)
    # the status line asks again by itself until the proxy has the new pair
    expect(page.locator("#tls-status .tls-note")).to_contain_text("no restart needed", timeout=15_000)
    context.close()
    assert all_new_connections_see(stack.home.port, wanted)


def test_turning_https_on_needs_a_restart_and_the_page_says_so(tmp_path: Path, sim: Sim) -> None:
    home = make_fortress(tmp_path, [("local", sim.url)])
    home.serve()
    admin = start_admin(home)
    try:
        c = httpx.Client(base_url=admin.url, timeout=10, follow_redirects=False)
        token = CSRF_FIELD.search(c.get("/login").text).group(1)  # type: ignore[union-attr]
        c.post("/login", data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "_csrf_token": token})
        assert eventually(lambda: "listens in plain HTTP" in c.get("/settings/tls/status").text)
        cert_pem, key_pem = self_signed("localhost")
        r = upload(c, token, cert_pem, key_pem)
        assert r.status_code == 200
        assert "turning HTTPS on needs a restart" in r.text
        assert f"https://127.0.0.1:{home.port}" in c.get("/help").text  # what clients will need
        assert httpx.get(f"{home.url}/").text == "Ollama is running"  # still plain HTTP
        home.stop()
        home.serve()
        assert served(home.port) == fingerprint(cert_pem)
        assert eventually(lambda: "no restart needed" in c.get("/settings/tls/status").text)
    finally:
        stop(admin.proc)
        home.stop()


# ---- the reload logic itself, without processes ------------------------------------------------------


def test_live_tls_reloads_only_a_changed_pair_and_keeps_the_old_one_on_failure(tmp_path: Path) -> None:
    cert, key, first = write_pair(tmp_path / "a")
    live = LiveTls(TlsFiles(str(cert), str(key)))
    assert live.fingerprint == first and live.refresh() is False
    os.utime(cert)  # touched, same bytes: no reload
    assert live.refresh() is False
    _, other_key = self_signed("localhost")
    key.write_bytes(other_key)  # a key that does not match: refused, the old pair stays
    os.utime(key, ns=(1, 1))
    assert live.refresh() is False and live.fingerprint == first
    cert2, key2, second = write_pair(tmp_path / "b")
    live.wanted = TlsFiles(str(cert2), str(key2))
    assert live.refresh() is True and live.fingerprint == second


def test_the_setting_wins_over_config_toml(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[proxy]\ntls_cert = "/etc/c.pem"\ntls_key = "/etc/k.pem"\n')
    cfg = load(str(config))
    assert effective_files(cfg, {}) == TlsFiles("/etc/c.pem", "/etc/k.pem")
    chosen = TlsFiles("/srv/c.pem", "/srv/k.pem")
    assert effective_files(cfg, {"tls.files": setting_value(chosen)}) == chosen
    assert effective_files(cfg, {"tls.files": "{broken"}) == TlsFiles("/etc/c.pem", "/etc/k.pem")
    assert effective_files(Config(), {}) is None
    # the playground's relay to the proxy trusts the pair in force, not config.toml's
    proxy = relay.for_config(cfg, {"tls.files": setting_value(chosen)})
    assert proxy.url.startswith("https://") and proxy.cert_file == "/srv/c.pem"
    assert relay.for_config(Config(), {}).url.startswith("http://")


def test_proxy_note_says_when_a_restart_is_needed() -> None:
    note = tlsinfo.proxy_note
    assert "not running" in note("ab", [])[0]
    assert note("ab", ["ab", "ab"]) == (note("ab", ["ab"])[0], True)
    assert "no restart needed" in note("ab", ["ab"])[0]
    assert "needs a restart" in note("ab", [""])[0]
    assert note("ab", ["cd", "ab"])[1] is False  # one worker still on the old pair: ask again
    assert "until you restart" in note(None, ["ab"])[0]
    assert note(None, [""]) == ("The proxy listens in plain HTTP.", True)
