"""Every path to a backend reaches it the same way (issue 9 §4): the proxy's poller sends the URL's
user:pass, the CLI and the admin honour `ca_bundle`, and an `openai` backend whose URL ends in /v1 is
probed at /v1/models. Real processes: the simulator behind nginx, the proxy, the CLI, the admin."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.admin.conftest import start_admin
from tests.conftest import Fortress, Sim, make_fortress, stop

from .conftest import Front


def backend_block(name: str, url: str, **fields: str | list[str]) -> str:
    lines = ["[[backends]]", f'name = "{name}"', f'url = "{url}"']
    for key, value in fields.items():
        lines.append(f"{key} = {value!r}".replace("'", '"'))
    return "\n".join(lines) + "\n"


def tags_through(f: Fortress, key: str, timeout_s: float = 10.0) -> list[str]:
    """The model names the proxy lists, once its poller has seen the backend (or the timeout)."""
    end = time.monotonic() + timeout_s
    while True:
        r = httpx.get(f"{f.url}/api/tags", headers={"Authorization": f"Bearer {key}"})
        names = [m["name"] for m in r.json()["models"]]
        if names or time.monotonic() > end:
            return names
        time.sleep(0.1)


def live_rows(f: Fortress) -> dict[str, str]:
    """Backend name -> the health cell of the admin dashboard's live fragment."""
    admin = start_admin(f)
    try:
        client, _ = admin.login()
        html = client.get("/dashboard/live").text
    finally:
        stop(admin.proc)
    rows = re.findall(r'href="/backends#b-([^"]+)">[^<]+</a></td>\s*<td>(.*?)</td>', html, re.S)
    return {name: re.sub(r"<[^>]+>", "", cell).strip() for name, cell in rows}


@pytest.fixture
def basic_gateway(tmp_path: Path, basic_front: Front) -> Iterator[Fortress]:
    f = make_fortress(tmp_path, [("guarded", basic_front.url())])
    f.serve()
    yield f
    f.stop()


def test_basic_auth_backend_is_polled_as_up(basic_gateway: Fortress, basic_front: Front) -> None:
    # without the URL's user:pass nginx answers 401 (the guard is real)
    assert httpx.get(basic_front.url("/api/version", userinfo="")).status_code == 401
    key = basic_gateway.key()
    assert tags_through(basic_gateway, key) == ["llama3.2:latest"]  # the poller got past Basic auth
    r = httpx.post(
        f"{basic_gateway.url}/api/generate",
        json={"model": "llama3.2", "prompt": "hi", "stream": False},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 200 and r.json()["done"] is True
    out = basic_gateway.cli("backend", "check").stdout
    assert re.match(r"ok\s+guarded\s+http://fortress:\*\*\*@127\.0\.0\.1:\d+\s+version ", out)


def test_private_ca_backend_is_up_for_cli_admin_and_proxy(tmp_path: Path, tls_front: Front) -> None:
    extra = backend_block("tls", tls_front.url(), ca_bundle=tls_front.ca_bundle) + backend_block(
        "untrusted", tls_front.url()
    )
    f = make_fortress(tmp_path, [], extra)
    res = f.cli("backend", "check", check=False)
    lines = {line.split()[1]: line for line in res.stdout.splitlines()}
    assert lines["tls"].startswith("ok") and "version 0.12.0" in lines["tls"]
    assert lines["untrusted"].startswith("fail") and "CERTIFICATE_VERIFY_FAILED" in lines["untrusted"]
    assert res.returncode == 1
    doctor = f.cli("doctor", check=False).stdout
    assert re.search(r"^ok\s+backend tls ", doctor, re.M)
    assert re.search(r"^fail\s+backend untrusted ", doctor, re.M)
    health = live_rows(f)
    assert health["tls"] == "healthy" and health["untrusted"].startswith("down")
    f.serve()
    try:
        assert tags_through(f, f.key()) == ["llama3.2:latest"]
    finally:
        f.stop()


def test_openai_backend_with_a_v1_url_is_probed_at_v1_models(tmp_path: Path, sim: Sim) -> None:
    extra = backend_block("prov", f"{sim.url}/v1", type="openai", models=["llama3.2"])
    f = make_fortress(tmp_path, [], extra)
    sim.clear()
    out = f.cli("backend", "check").stdout
    assert re.match(r"ok\s+prov\s+\S+/v1\s+\d+ models listed", out), out
    assert live_rows(f) == {"prov": "healthy"}
    paths = [r["path"] for r in sim.requests()]
    assert paths and set(paths) == {"/v1/models"}  # never /v1/v1/models
