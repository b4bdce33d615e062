"""The first-run wizard in Chromium: a fresh install (no backend anywhere) walks its first admin through
a live-tested backend, a first user and key, and a curl line that really works against the proxy."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from admin.controllers.welcome import curl_line
from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, new_page, shot, start_admin
from tests.conftest import Fortress, Sim, make_fortress, start_sim, stop

FULL_KEY = re.compile(r"^fk_[a-z0-9]{8}_[A-Za-z0-9]{32,}$")


def test_the_curl_line_is_one_shell_line_with_a_json_body() -> None:
    line = curl_line("http://127.0.0.1:8080", "fk_abcdefgh_secret", "ollama", "llama3.2:1b")
    argv = shlex.split(line)
    assert argv[:2] == ["curl", "http://127.0.0.1:8080/api/chat"] and "\n" not in line
    assert "Authorization: Bearer fk_abcdefgh_secret" in argv
    body = json.loads(argv[argv.index("-d") + 1])
    assert body == {
        "model": "llama3.2:1b",
        "messages": [{"role": "user", "content": "Hello!"}],
        "stream": False,
    }
    # a provider's model answers Ollama's /api/chat too (translated), under its public name
    assert "gw:443/api/chat" in curl_line("https://gw:443", "k", "openai", "prov/gpt-4o-mini")


def test_no_wizard_where_a_backend_exists_and_none_without_a_session(admin: Admin) -> None:
    """The module's admin has a backend in config.toml: the wizard stays out of the way."""
    with admin.client() as anonymous:
        assert anonymous.get("/welcome").headers["location"] == "/login"
    c, _ = admin.login()
    assert c.get("/").status_code == 200
    assert (c.get("/welcome").status_code, c.get("/welcome").headers["location"]) == (303, "/")
    assert c.post("/welcome/user", data={"name": "x"}).status_code == 403  # CSRF like every form


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[tuple[Fortress, Admin, Sim]]:
    """A proxy and admin over a database with no backend at all (none in config.toml either)."""
    with ExitStack() as cleanup:  # whatever started is stopped, even when a later step fails
        sim = start_sim("--models", "llama3.2:1b", name="first")
        cleanup.callback(sim.stop)
        home = make_fortress(tmp_path, [])
        home.serve()
        cleanup.callback(home.stop)
        admin = start_admin(home)
        cleanup.callback(stop, admin.proc)
        yield home, admin, sim


def _sign_in(page: Page, user: str = ADMIN_USER, password: str = ADMIN_PASSWORD) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def _backends(home: Fortress) -> int:
    with closing(sqlite3.connect(home.db)) as db:
        return db.execute("SELECT count(*) FROM backends").fetchone()[0]


def _run(line: str) -> dict:
    """The wizard's curl line, run as the admin would paste it (the proxy may need a second for the key)."""
    deadline = time.monotonic() + 5
    while True:
        done = subprocess.run(shlex.split(line), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        reply = json.loads(done.stdout)
        if "error" not in reply or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


@pytest.mark.browser
def test_first_login_walks_through_backend_user_key_and_a_working_curl(
    browser: Browser, fresh: tuple[Fortress, Admin, Sim]
) -> None:
    home, admin, sim = fresh
    page = new_page(browser, admin.url)
    _sign_in(page)
    expect(page.get_by_role("heading", name="Welcome to Fortress")).to_be_visible()
    expect(page.locator('[aria-current="step"]')).to_have_text("Add a backend")

    page.get_by_label("Backend URL").fill("http://127.0.0.1:9")
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("status")).to_contain_text("unreachable")

    sim.clear()
    page.get_by_label("Backend URL").fill(sim.url)
    page.get_by_role("button", name="Test connection").click()
    expect(page.get_by_role("status")).to_contain_text("healthy")
    expect(page.get_by_role("status")).to_contain_text("llama3.2:1b")
    assert any(r["path"] == "/api/version" for r in sim.requests())  # the test really called the backend
    assert _backends(home) == 0  # testing saves nothing

    page.get_by_role("button", name="Add backend and continue").click()
    assert _backends(home) == 1
    expect(page.get_by_role("heading", name="Step 2 of 3")).to_be_visible()
    expect(page.locator("main")).to_contain_text("llama3.2:1b")
    page.get_by_label("User name").fill("first-user")
    page.get_by_role("button", name="Create user and key").click()

    expect(page.get_by_role("heading", name="Step 3 of 3")).to_be_visible()
    key = page.get_by_label("New key").input_value()
    assert FULL_KEY.match(key)
    line = page.get_by_label("Command to try the key").input_value()
    shot(page, "wizard")
    assert key in line and "llama3.2:1b" in line
    reply = _run(line)
    assert reply["done"] is True and reply["message"]["content"], reply
    assert reply["model"] == "llama3.2:1b"

    page.get_by_role("link", name="Open the dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()  # never again
    page.goto("/welcome")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.goto("/audit")
    for action in ("backend.add", "user.add", "key.create", "wizard.done"):
        expect(page.locator("main")).to_contain_text(action)
    page.context.close()


@pytest.mark.browser
def test_the_wizard_can_be_skipped_for_good_and_viewers_never_see_it(
    browser: Browser, fresh: tuple[Fortress, Admin, Sim]
) -> None:
    _, admin, _ = fresh
    c, token = admin.login()
    data = {"username": "watcher", "new_password": "watching-you", "role": "viewer", "_csrf_token": token}
    assert c.post("/settings/admins", data=data).status_code == 303
    viewer = new_page(browser, admin.url)
    _sign_in(viewer, "watcher", "watching-you")
    expect(viewer.get_by_role("heading", name="Dashboard")).to_be_visible()
    viewer.context.close()
    v, vtoken = admin.login("watcher", "watching-you")
    assert v.post("/welcome/skip", data={"_csrf_token": vtoken}).status_code == 403  # admins decide

    page = new_page(browser, admin.url)
    _sign_in(page)
    expect(page.get_by_role("heading", name="Welcome to Fortress")).to_be_visible()
    page.get_by_role("button", name="Skip the set-up").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    _sign_in(page)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    assert httpx.Client(base_url=admin.url, cookies=c.cookies).get("/welcome").status_code == 303
    page.context.close()
