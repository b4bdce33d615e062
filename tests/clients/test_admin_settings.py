"""IP trust sessions and CORS origins switched on in the admin's settings reach the running proxy
without a restart; a malformed origin is refused with a message that names it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.admin.conftest import csrf, start_admin
from tests.clients.conftest import new_key, serving
from tests.conftest import Sim, stop

ORIGIN = "http://app.example:3000"


def test_trust_and_cors_from_the_settings_page_apply_live(tmp_path: Path, backend: Sim) -> None:
    with serving(tmp_path, [("local", backend.url)]) as f:
        key = new_key(f, "webapp")
        assert httpx.post(f"{f.url}/auth", headers={"X-API-Key": key}).status_code == 404  # off
        admin = start_admin(f)
        try:
            c, _token = admin.login()
            page = c.get("/settings")
            assert "Browser origins allowed" in page.text and "IP trust sessions" in page.text
            bad = c.post(
                "/settings", data={"security.cors_origins": "app.example/", "_csrf_token": csrf(page)}
            )
            assert bad.status_code == 400 and "is not an origin" in bad.text
            saved = c.post(
                "/settings",
                data={
                    "security.cors_origins": f"{ORIGIN}\n",
                    "security.ip_trust_ttl_s": "60",
                    "_csrf_token": csrf(page),
                },
            )
            assert saved.status_code == 200 and "Saved 2 change(s)" in saved.text
        finally:
            stop(admin.proc)
        end = time.monotonic() + 10  # the proxy reloads within a second; generous on a busy machine
        while (r := httpx.post(f"{f.url}/auth", headers={"X-API-Key": key})).status_code != 200:
            assert time.monotonic() < end, r.text
            time.sleep(0.05)
        assert r.json()["expires_in"] == 60
        served = httpx.get(f"{f.url}/api/tags", headers={"Origin": ORIGIN})  # keyless: trusted address
        assert served.status_code == 200 and served.headers["access-control-allow-origin"] == ORIGIN
