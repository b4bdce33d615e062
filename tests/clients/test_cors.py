"""Issue 11.4 (DESIGN §6.1): browser pages call Fortress with fetch() and a key. A real headless
Chromium loads a page from an allowed origin and one from a foreign origin (another port: another
origin); the browser itself enforces the answer."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.admin.conftest import CHROMIUM_ARGS
from tests.clients.conftest import new_key, serving
from tests.conftest import Fortress, Sim, free_port

pytestmark = pytest.mark.browser
PAGE = b"<!doctype html><title>app</title><p>a browser app</p>"
CHAT = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": False}
CALL = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {status: r.status, body: await r.text(), id: r.headers.get("X-Request-ID"),
            remaining: r.headers.get("X-RateLimit-Remaining")};
  } catch (e) { return {error: String(e)}; }
}"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[str, str]]:
    """Two page servers: (allowed origin, foreign origin)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", free_port()), _Page) for _ in range(2)]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield tuple(f"http://127.0.0.1:{s.server_address[1]}" for s in servers)  # type: ignore[misc]
    for s in servers:
        s.shutdown()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, backend: Sim, origins: tuple[str, str]
) -> Iterator[Fortress]:
    extra = f'[security]\ncors_origins = ["{origins[0]}"]\n'
    with serving(tmp_path_factory.mktemp("cors"), [("local", backend.url)], extra) as f:
        yield f


@pytest.fixture(scope="module")
def key(proxy: Fortress) -> str:
    return new_key(proxy, "webapp", "--rate", "100/1m")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


def page_at(browser: Browser, origin: str) -> Page:
    page = browser.new_page()
    page.goto(origin + "/")
    return page


def post(key: str, body: dict, **headers: str) -> dict:
    return {
        "method": "POST",
        "headers": {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
        "body": json.dumps(body),
    }


def test_an_allowed_origin_calls_the_proxy(
    browser: Browser, proxy: Fortress, key: str, origins: tuple[str, str]
) -> None:
    page = page_at(browser, origins[0])
    try:
        chat = page.evaluate(CALL, [f"{proxy.url}/api/chat", post(key, CHAT)])
        assert chat["status"] == 200 and '"done":true' in chat["body"], chat
        assert chat["id"] and chat["remaining"] is not None  # exposed headers are readable
        stream = page.evaluate(CALL, [f"{proxy.url}/api/chat", post(key, {**CHAT, "stream": True})])
        assert stream["status"] == 200 and stream["body"].count("\n") > 2
        openai = page.evaluate(
            CALL,
            [f"{proxy.url}/v1/chat/completions", post(key, CHAT, **{"X-Stainless-Lang": "js"})],
        )
        assert openai["status"] == 200 and '"choices"' in openai["body"], openai
        tags = page.evaluate(CALL, [f"{proxy.url}/api/tags", {"headers": {"X-API-Key": key}}])
        assert tags["status"] == 200 and "llama3.2" in tags["body"]
        refused = page.evaluate(CALL, [f"{proxy.url}/api/chat", post("fk_nothere1_" + "x" * 43, CHAT)])
        assert refused["status"] == 401 and "invalid API key" in refused["body"]  # errors reach the page
    finally:
        page.close()


def test_a_foreign_origin_is_refused_by_the_browser(
    browser: Browser, proxy: Fortress, key: str, origins: tuple[str, str]
) -> None:
    page = page_at(browser, origins[1])
    try:
        for url, init in [
            (f"{proxy.url}/api/chat", post(key, CHAT)),
            (f"{proxy.url}/api/version", {}),  # a simple request: sent, but its answer withheld
        ]:
            out = page.evaluate(CALL, [url, init])
            assert "error" in out and "Failed to fetch" in out["error"], out
    finally:
        page.close()


def test_preflight_and_headers_on_the_wire(proxy: Fortress, key: str, origins: tuple[str, str]) -> None:
    allowed, foreign = origins
    pre = httpx.options(
        f"{proxy.url}/v1/chat/completions",
        headers={
            "Origin": allowed,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 204 and pre.content == b""
    assert pre.headers["access-control-allow-origin"] == allowed and pre.headers["vary"] == "Origin"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "Authorization" in pre.headers["access-control-allow-headers"]
    assert int(pre.headers["access-control-max-age"]) > 0
    other = httpx.options(f"{proxy.url}/api/chat", headers={"Origin": foreign})
    assert other.status_code == 204 and "access-control-allow-origin" not in other.headers
    relayed = httpx.post(
        f"{proxy.url}/api/show", json={"model": "llama3.2"}, headers={"Origin": allowed, "X-API-Key": key}
    )
    assert relayed.headers["access-control-allow-origin"] == allowed
    assert "X-Request-ID" in relayed.headers["access-control-expose-headers"]
    missing = httpx.post(f"{proxy.url}/api/show", json={"model": "llama3.2"}, headers={"Origin": allowed})
    assert missing.status_code == 401 and missing.headers["access-control-allow-origin"] == allowed
    plain = httpx.post(f"{proxy.url}/api/show", json={"model": "llama3.2"}, headers={"X-API-Key": key})
    assert "access-control-allow-origin" not in plain.headers
    assert httpx.options(f"{proxy.url}/nowhere", headers={"Origin": allowed}).status_code == 404
