"""Editing a database backend in the admin over real HTTP: row, audit, roles, CSRF, the proxy follows."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, start_admin
from tests.admin.test_browser import CHROMIUM_ARGS
from tests.conftest import PY, Fortress, Sim, make_fortress, start, start_sim, stop, wait_port

SECRET = "sk-backend-credential-123"


def _query(admin: Admin, sql: str, *args: object) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(admin.home.db)) as conn:
        return conn.execute(sql, args).fetchall()


def _row(admin: Admin) -> tuple:
    columns = "url, weight, type, max_concurrent, credential_enc IS NOT NULL"
    (row,) = _query(admin, f"SELECT {columns} FROM backends WHERE name = 'gpu1'")
    return row


def _edit(c: httpx.Client, token: str | None, name: str = "gpu1", **fields: str) -> httpx.Response:
    data = {"url": "http://127.0.0.1:9", "type": "ollama", "weight": "1", "max_concurrent": "0", "models": ""}
    data.update(fields)
    if token is not None:
        data["_csrf_token"] = token
    return c.post(f"/backends/{name}/edit", data=data)


@pytest.fixture(scope="module")
def gpu1(admin: Admin) -> None:
    """A database backend with a credential, added through the admin's own form."""
    c, token = admin.login()
    r = c.post(
        "/backends",
        data={
            "name": "gpu1",
            "url": "http://127.0.0.1:9",
            "weight": "1",
            "credential": SECRET,
            "_csrf_token": token,
        },
    )
    assert r.status_code == 303, r.text


def test_edit_form_is_labelled_never_shows_the_credential_and_only_for_database_backends(
    admin: Admin, gpu1: None
) -> None:
    c, _ = admin.login()
    page = c.get("/backends").text
    assert 'action="/backends/gpu1/edit"' in page and 'action="/backends/local/edit"' not in page
    for field in ("url", "type", "weight", "max", "models", "cred"):
        assert f'<label for="e-{field}-gpu1">' in page and f'id="e-{field}-gpu1"' in page
    cred_input = re.search(r'<input id="e-cred-gpu1"[^>]*>', page)
    assert cred_input and "value=" not in cred_input.group(0)
    assert SECRET not in page
    assert "within a second" in page


def test_admin_edits_url_and_weight_the_row_and_audit_follow(admin: Admin, gpu1: None) -> None:
    c, token = admin.login()
    version = _query(admin, "SELECT value FROM meta WHERE key = 'config_version'")
    r = _edit(c, token, url="http://127.0.0.2:9/", weight="7")
    assert (r.status_code, r.headers["location"]) == (303, "/backends?saved=gpu1")
    assert _row(admin) == ("http://127.0.0.2:9", 7, "ollama", 0, 1)  # blank credential = keep
    assert _query(admin, "SELECT value FROM meta WHERE key = 'config_version'") != version
    ((actor, ip, detail),) = _query(
        admin, "SELECT actor, ip, detail FROM audit WHERE action = 'backend.update' AND target = 'gpu1'"
    )
    assert (actor, ip) == ("admin", "127.0.0.1")
    assert json.loads(detail) == {"url": "http://127.0.0.2:9", "weight": 7}
    assert "Backend gpu1 saved" in c.get("/backends", params={"saved": "gpu1"}).text

    bad = _edit(c, token, url="http://127.0.0.3:9", weight="heavy")
    assert bad.status_code == 400 and "weight: must be a whole number" in bad.text
    assert 'value="http://127.0.0.3:9"' in bad.text  # the form comes back with what was typed
    assert _edit(c, token, name="local").status_code == 400
    assert _edit(c, token, name="nope").status_code == 400
    assert _row(admin)[:2] == ("http://127.0.0.2:9", 7)

    assert _edit(c, token, url="http://127.0.0.2:9", weight="7", clear_credential="1").status_code == 303
    assert _row(admin)[4] == 0


def test_viewer_and_missing_csrf_are_refused_and_change_nothing(admin: Admin, gpu1: None) -> None:
    c, token = admin.login()
    r = c.post(
        "/settings/admins",
        data={
            "username": "edit-viewer",
            "new_password": "only-looking",
            "role": "viewer",
            "_csrf_token": token,
        },
    )
    assert r.status_code == 303
    before = _row(admin)
    v, vtoken = admin.login("edit-viewer", "only-looking")
    assert 'action="/backends/gpu1/edit"' not in v.get("/backends").text
    assert _edit(v, vtoken, weight="9").status_code == 403
    assert _edit(c, None, weight="9").status_code == 403
    assert _edit(c, "x" * 80, weight="9").status_code == 403
    assert _row(admin) == before


GENERATE = {"model": "llama3.2:latest", "prompt": "hi"}


def generated(on: Sim) -> int:
    return sum(r["path"] == "/api/generate" for r in on.requests())


@dataclass
class Move:
    """A running proxy and admin, database backend gpu1 on the `sim` server, and a server to move it to."""

    home: Fortress
    admin: httpx.Client
    token: str
    key: str
    moved_to: Sim

    def generate(self) -> None:
        r = httpx.post(
            f"{self.home.url}/api/generate",
            json={**GENERATE, "stream": False},
            headers={"X-API-Key": self.key},
        )
        assert r.status_code == 200, r.text

    def edit_url(self) -> None:
        assert _edit(self.admin, self.token, url=self.moved_to.url).status_code == 303


@pytest.fixture
def move(tmp_path: Path, sim: Sim) -> Iterator[Move]:
    moved_to = start_sim(name="moved-to")
    home = make_fortress(tmp_path, [])
    home.serve()
    admin = start_admin(home)
    try:
        c, token = admin.login()
        assert (
            c.post("/backends", data={"name": "gpu1", "url": sim.url, "_csrf_token": token}).status_code
            == 303
        )
        yield Move(home, c, token, home.key("alice"), moved_to)
    finally:
        stop(admin.proc)
        home.stop()
        stop(moved_to.proc)


def test_an_edited_url_reaches_the_running_proxy_within_a_second(move: Move) -> None:
    """Moving a backend from one healthy server to another: the next requests go to the new one."""
    move.generate()
    assert not generated(move.moved_to)
    move.edit_url()
    saved = time.monotonic()
    while not generated(move.moved_to):
        assert time.monotonic() - saved < 1.5, "the proxy still sends to the old URL"
        move.generate()
        time.sleep(0.05)


def test_a_connection_out_when_the_url_changes_is_closed_not_pooled_again(move: Move, sim: Sim) -> None:
    """A stream to the old URL that ends after the edit: its connection is closed when it comes back, so
    no later request goes to the old server (fortress/proxy/pool.py retires it)."""
    slow = {"X-API-Key": move.key, "X-Sim-Tokens": "80", "X-Sim-Rate": "10"}  # an 8 s stream
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{move.home.url}/api/generate", json=GENERATE, headers=slow) as held,
    ):
        lines = held.iter_lines()
        assert held.status_code == 200 and json.loads(next(lines))["done"] is False
        move.edit_url()
        saved = time.monotonic()
        while not generated(move.moved_to):  # the proxy took the edit while the stream is still going
            assert time.monotonic() - saved < 5, "the proxy still sends to the old URL"
            move.generate()
        sim.clear()
        assert json.loads(list(lines)[-1])["done"] is True  # the stream ends well on the old server
    for _ in range(3):
        move.generate()
    assert (generated(sim), generated(move.moved_to)) == (0, 4)


# `fortress admin` with one more backend kind registered, as a new kind module does on import
WITH_EXTRA_KIND = """
import sys
from fortress.backends.kind import register
from fortress.backends.openai import OpenAIKind
class Extra(OpenAIKind):
    name = "extra"
register(Extra())
from fortress.cli import main
raise SystemExit(main())
"""
TYPE_OPTIONS = re.compile(r'<select id="(?:b|w|e)-type[^"]*" name="type">(.*?)</select>', re.S)
OPTION = re.compile(r'<option value="([^"]+)"( selected)?')


def test_backend_type_choices_are_the_registered_kinds(tmp_path: Path) -> None:
    """Every form that asks for a backend type offers each registered kind: a new kind shows up with no
    template or schema edit (here one registered at start-up), and the edit form selects the backend's own."""
    home = make_fortress(tmp_path, [])
    proc = start([PY, "-c", WITH_EXTRA_KIND, "admin", "--config", str(home.config)])
    listen = tomllib.loads(home.config.read_text())["admin"]["listen"]
    admin = Admin(int(listen.rsplit(":", 1)[1]), proc, home)
    wait_port(admin.port, proc)
    try:
        c, token = admin.login()

        def choices(path: str) -> list[list[tuple[str, bool]]]:
            page = c.get(path)
            assert page.status_code == 200, page.text
            return [[(v, bool(sel)) for v, sel in OPTION.findall(s)] for s in TYPE_OPTIONS.findall(page.text)]

        assert choices("/welcome") == [[("ollama", True), ("openai", False), ("extra", False)]]
        data = {"name": "gpu1", "url": "http://127.0.0.1:9", "type": "extra", "models": "m1"}
        r = c.post("/backends", data={**data, "_csrf_token": token})
        assert r.status_code == 303, r.text[-2000:]
        edit, add = choices("/backends")  # the edit form comes first, under its backend
        assert add == [("ollama", True), ("openai", False), ("extra", False)]
        assert edit == [("ollama", False), ("openai", False), ("extra", True)]
    finally:
        stop(proc)


@pytest.mark.browser
def test_edit_in_a_browser_by_labels(admin: Admin, gpu1: None) -> None:
    """Headless Chromium: open the Edit section, fill fields found by their labels, save, see the notice."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(base_url=admin.url)
        page.goto("/login")
        page.get_by_label("User name").fill(ADMIN_USER)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/backends")
        card = page.locator("#b-gpu1")
        card.get_by_text("Edit gpu1").click()
        card.get_by_label("URL").fill("http://127.0.0.4:9")
        card.get_by_label("Weight").fill("3")
        expect(card.get_by_label("New credential")).to_have_value("")
        card.get_by_role("button", name="Save gpu1").click()
        expect(page.get_by_role("status")).to_contain_text("within a second")
        browser.close()
    assert _row(admin)[:2] == ("http://127.0.0.4:9", 3)
