"""Admin fixtures: a real admin process (`fortress admin`) over a real Fortress home and database, and
for browser tests one headless Chromium and one seeded deployment shared by the whole session."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.admin.seed import seed_history
from tests.conftest import PY, ROOT, Fortress, Sim, make_fortress, start, start_sim, stop, wait_port

ADMIN_USER, ADMIN_PASSWORD = "admin", "correct horse battery"
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless (never a downloaded browser); per module, because Playwright's sync
    API holds an event loop in this thread while it runs, and other modules use asyncio.run()."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class Deployment:
    """A proxy, its admin and three backends with a week of seeded traffic: what the README shows."""

    home: Fortress
    admin: Admin
    sims: dict[str, Sim]
    keys: dict[str, list[str]]  # the seeded people's full keys


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """`local` (config.toml; streams and pull progress paced at 5 lines/s, so progress is visible),
    `gpu-2` (Ollama) and `cloud` (OpenAI-compatible) in the database, and the seeded history."""
    with ExitStack() as cleanup:  # whatever started is stopped, even when a later step fails
        sims: dict[str, Sim] = {}
        for name, flags in (
            ("local", ("--rate", "5", "--models", "llama3.2:1b,qwen3:0.6b")),
            (
                "gpu-2",
                ("--models", "llama3.1:8b,qwen2.5-coder:7b,nomic-embed-text", "--loaded", "llama3.1:8b"),
            ),
            ("cloud", ("--models", "gpt-4o-mini")),
        ):
            sims[name] = start_sim(*flags, name=name)
            cleanup.callback(sims[name].stop)
        home = make_fortress(tmp_path_factory.mktemp("deployment"), [("local", sims["local"].url)])
        home.cli("backend", "add", "gpu-2", sims["gpu-2"].url)
        home.cli("backend", "add", "cloud", sims["cloud"].url, "--type", "openai", "--models", "gpt-4o-mini")
        keys = seed_history(home.db)
        home.serve()
        cleanup.callback(home.stop)
        admin = start_admin(home)
        cleanup.callback(stop, admin.proc)
        yield Deployment(home, admin, sims, keys)


def new_page(browser: Browser, url: str) -> Page:
    """A page in a fresh context (its own cookies) at the README's window size; dialogs are accepted."""
    context = browser.new_context(
        base_url=url, viewport={"width": 1280, "height": 900}, accept_downloads=True
    )
    page = context.new_page()
    page.on("dialog", lambda d: d.accept())
    return page


def sign_in(
    page: Page, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD, landing: str = "Dashboard"
) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    """A README screenshot, docs/screenshots/NAME.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)
