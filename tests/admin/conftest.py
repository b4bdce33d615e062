"""Admin fixtures: a real admin process (`fortress admin`) over a real Fortress home and database."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PY, Fortress, make_fortress, start, stop, wait_port

ADMIN_USER, ADMIN_PASSWORD = "admin", "correct horse battery"
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


@dataclass
class Admin:
    port: int
    proc: subprocess.Popen
    home: Fortress

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, follow_redirects=False)

    def login(self, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> tuple[httpx.Client, str]:
        """A signed-in client and its CSRF token."""
        c = self.client()
        token = csrf(c.get("/login"))
        r = c.post("/login", data={"username": user, "password": password, "_csrf_token": token})
        assert r.status_code == 303, r.text
        return c, token


def csrf(response: httpx.Response) -> str:
    m = CSRF_FIELD.search(response.text)
    assert m, f"no CSRF field in {response.request.url}"
    return m.group(1)


def start_admin(home: Fortress) -> Admin:
    listen = tomllib.loads(home.config.read_text())["admin"]["listen"]
    port = int(listen.rsplit(":", 1)[1])
    proc = start([PY, "-m", "fortress", "admin", "--config", str(home.config)])
    wait_port(port, proc)
    return Admin(port, proc, home)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Fortress:
    """A Fortress home whose single backend is unreachable (pages must still render)."""
    return make_fortress(tmp_path_factory.mktemp("admin"), [("local", "http://127.0.0.1:9")])


@pytest.fixture(scope="module")
def admin(home: Fortress) -> Iterator[Admin]:
    a = start_admin(home)
    yield a
    stop(a.proc)


@pytest.fixture
def fresh_admin(tmp_path: Path) -> Iterator[Admin]:
    """An admin process of its own, for tests that lock out 127.0.0.1."""
    a = start_admin(make_fortress(tmp_path, []))
    yield a
    stop(a.proc)
