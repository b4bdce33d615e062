"""Headless Chromium drives the admin next to a real proxy and simulator; saves README screenshots."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.admin.conftest import (
    ADMIN_USER,
    CHROMIUM_ARGS,  # noqa: F401 - other modules import it from here
    Admin,
    Deployment,
    new_page,
    shot,
    sign_in,
)
from tests.conftest import Fortress

pytestmark = pytest.mark.browser
PERCENT = re.compile(r"^\d+%$")
FULL_KEY = re.compile(r"^fk_[a-z0-9]{8}_[A-Za-z0-9]{32,}$")


@pytest.fixture(scope="module")
def stack(deployment: Deployment) -> tuple[Fortress, Admin]:
    return deployment.home, deployment.admin


@pytest.fixture
def page(browser: Browser, stack: tuple[Fortress, Admin]) -> Iterator[Page]:
    pg = new_page(browser, stack[1].url)
    yield pg
    pg.context.close()


def within_1s(check: Callable[[], bool]) -> bool:
    """True once `check` holds, trying for one second (the proxy's reload bound)."""
    deadline = time.monotonic() + 1.0
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_login_page_and_wrong_password(page: Page) -> None:
    page.goto("/users")
    expect(page).to_have_url("/login")  # redirected: a session is required
    shot(page, "login")
    page.get_by_label("User name").fill(ADMIN_USER)
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")


def test_dashboard_updates_without_reload(
    page: Page, stack: tuple[Fortress, Admin], deployment: Deployment
) -> None:
    sign_in(page)
    expect(page.locator("#cpu")).to_have_text(PERCENT)
    expect(page.locator("#mem")).to_contain_text("%")
    page.evaluate("window.__marker = 1")  # survives only if the page is never reloaded
    stamp = page.locator("#live .sub", has_text="Updated")
    httpx.get(f"{stack[0].url}/api/tags")  # a request, so the proxy's counters move
    first = stamp.inner_text()
    deadline = time.monotonic() + 10
    while stamp.inner_text() == first and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    assert stamp.inner_text() != first
    assert page.evaluate("window.__marker") == 1
    expect(page.locator("#live")).to_contain_text("worker(s) reporting")
    with _traffic(deployment):  # the README's dashboard shows a proxy at work
        tile = page.locator(".tile", has_text="Requests/s")
        deadline = time.monotonic() + 20
        while float(tile.locator(".big").inner_text()) < 2 and time.monotonic() < deadline:
            page.wait_for_timeout(250)
        assert float(tile.locator(".big").inner_text()) >= 2
        tokens = page.locator("#tokens")  # from the proxy's metrics table
        expect(page.locator("#refused")).to_have_text("0 refused by key limits")
        while tokens.inner_text().startswith("0 ") and time.monotonic() < deadline + 10:
            page.wait_for_timeout(250)
        assert int(tokens.inner_text().split()[0].replace(",", "")) > 0
        shot(page, "dashboard")


@contextmanager
def _traffic(deployment: Deployment) -> Iterator[None]:
    """Chats through the proxy with two seeded keys, on a thread, while the block runs."""
    done = threading.Event()
    keys = [deployment.keys["ci-bot"][0], deployment.keys["support-bot"][0]]

    def send() -> None:
        with httpx.Client(base_url=deployment.home.url, timeout=30) as c:
            while not done.is_set():
                for key, model in zip(keys, ("llama3.1:8b", "qwen2.5-coder:7b"), strict=True):
                    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
                    c.post("/api/chat", json=body, headers={"Authorization": f"Bearer {key}"})
                time.sleep(0.05)

    worker = threading.Thread(target=send)
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join()


def test_user_and_key_lifecycle_against_the_proxy(page: Page, stack: tuple[Fortress, Admin]) -> None:
    proxy = stack[0].url
    sign_in(page)
    page.get_by_role("link", name="Users").click()
    page.get_by_label("New user name").fill("browser-user")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("heading", name="User browser-user")).to_be_visible()
    page.get_by_label("Label").fill("laptop")
    page.get_by_label("Rate limit (N/WINDOW)").fill("100/1m")
    page.get_by_role("button", name="Create key").click()
    key_box = page.get_by_label("New key")
    expect(key_box).to_have_value(FULL_KEY)
    key = key_box.input_value()
    expect(page.get_by_role("button", name="Copy key")).to_be_visible()
    shot(page, "keys")
    auth = {"Authorization": f"Bearer {key}"}
    # the proxy picks up configuration changes within a second (DESIGN §1)
    assert within_1s(lambda: httpx.get(f"{proxy}/api/tags", headers=auth).status_code == 200)

    page.reload()
    assert key not in page.content()  # shown once, never again
    expect(page.locator("#keys-table")).to_contain_text("laptop")

    page.get_by_role("button", name=f"Disable key {key[3:11]}").click()
    expect(page.locator("#keys-table .state")).to_have_text("disabled")
    assert within_1s(lambda: httpx.get(f"{proxy}/api/tags", headers=auth).status_code == 401)

    page.get_by_role("button", name=f"Enable key {key[3:11]}").click()
    expect(page.locator("#keys-table .state")).to_have_text("active")
    page.get_by_role("button", name=f"Revoke key {key[3:11]}").click()  # the confirm dialog is accepted
    expect(page.locator("#keys-table .state")).to_have_text("revoked")
    page.goto("/users")
    expect(page.get_by_role("link", name="browser-user")).to_be_visible()
    shot(page, "users")


def test_backends_list_models_and_pull_with_progress(page: Page, stack: tuple[Fortress, Admin]) -> None:
    home, _ = stack
    sign_in(page)
    page.goto("/backends")
    card = page.locator("#b-local")
    expect(card).to_contain_text("llama3.2:1b")
    expect(card).to_contain_text("qwen3:0.6b")
    expect(card).to_contain_text("healthy")
    shot(page, "backends")

    page.goto("/models")
    page.get_by_label("Model name").fill("smollm2:135m")
    page.get_by_role("button", name="Pull model").click()
    bar = page.locator("#pulls progress").first
    expect(bar).to_be_visible()
    seen = set()
    deadline = time.monotonic() + 30
    while "done" not in page.locator("#pulls").inner_text() and time.monotonic() < deadline:
        seen.add(int(bar.get_attribute("value") or 0))
        page.wait_for_timeout(100)
    expect(page.locator("#pulls")).to_contain_text("done")
    assert any(0 < v < 100 for v in seen), f"no intermediate progress seen: {sorted(seen)}"
    key = home.key("puller")
    tags = httpx.get(f"{home.url}/api/tags", headers={"Authorization": f"Bearer {key}"}).json()
    names = {m["name"] for m in tags["models"]}
    assert "smollm2:135m" in names, names


def test_analytics_and_narrow_screen(page: Page) -> None:
    sign_in(page)
    page.goto("/analytics")
    expect(page.locator("svg.chart")).to_have_count(6)
    shot(page, "analytics")
    page.set_viewport_size({"width": 360, "height": 800})
    for path in ("/", "/users", "/analytics", "/settings", "/models"):
        page.goto(path)
        overflow = page.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways at 360 px ({overflow} px)"
    for path in ("/settings", "/users/browser-user", "/backends"):
        page.goto(path)
        unlabeled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => !(e.id && document.querySelector(`label[for="${e.id}"]`))).length"""
        )
        assert unlabeled == 0, path


def test_settings_change_reaches_the_running_proxy(page: Page, stack: tuple[Fortress, Admin]) -> None:
    home, _ = stack
    key = home.key("settings-user")
    auth = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{home.url}/api/tags", headers=auth).status_code == 200
    sign_in(page)
    page.goto("/settings")
    page.get_by_label("IP deny list (CIDRs, one per line)").fill("127.0.0.0/8")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_role("status")).to_contain_text("no restart needed")
    try:
        assert within_1s(lambda: httpx.get(f"{home.url}/api/tags", headers=auth).status_code == 403)
    finally:
        page.goto("/settings")
        page.get_by_label("IP deny list (CIDRs, one per line)").fill("")
        page.get_by_role("button", name="Save settings").click()
        expect(page.get_by_role("status")).to_contain_text("Saved")
