"""The playground's web search: admin -> proxy /api/web_search (the SearXNG stand-in) -> the results as
context -> the answer with its sources, over real HTTP and in headless Chromium."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.admin.conftest import Admin, new_page
from tests.admin.test_browser import sign_in
from tests.admin.test_playground_browser import answer, ensure_key
from tests.admin.test_playground_http import _chat, _make_key, _rows, playground_stack
from tests.conftest import Fortress, Sim, stop
from tests.search.conftest import Stand, start_stand

QUESTION = "fortress gateway news"
FIRST = "https://www.duckduckgo.example/fortress-gateway-news/1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fortress, Admin, Sim, Stand]]:
    tmp = tmp_path_factory.mktemp("pg-search")
    searxng = start_stand(tmp)
    try:
        with playground_stack(
            tmp,
            "searcher",
            "--models",
            "llama3.2:1b",
            "--journal-bodies",
            extra=f'[search]\nsearxng_url = "{searxng.url}"\n',
        ) as (home, admin, sim):
            yield home, admin, sim, searxng
    finally:
        stop(searxng.proc)


def test_the_question_is_searched_first_and_the_answer_starts_with_its_sources(
    stack: tuple[Fortress, Admin, Sim, Stand],
) -> None:
    home, admin, sim, searxng = stack
    c, token = admin.login()
    assert 'id="pg-web-search">' in c.get("/playground").text  # configured: the toggle is enabled
    _make_key(c, token, user="searcher")
    sim.clear()
    status, lines = _chat(
        c,
        token,
        {"model": "llama3.2:1b", "messages": [{"role": "user", "content": QUESTION}], "web_search": True},
    )
    assert status == 200
    sources = lines[0]["sources"]
    assert len(sources) == 5 and sources[0] == {"title": "fortress gateway news - result 1", "url": FIRST}
    assert lines[-1]["done"] and "".join(line.get("message", {}).get("content", "") for line in lines[1:])
    asked = [r for r in searxng.requests() if r["path"] == "/search"][-1]
    assert asked["query"] == {"q": QUESTION, "format": "json"}
    (chat,) = [r for r in sim.requests() if r["path"] == "/api/chat"]
    messages = json.loads(chat["body"])["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]  # the results, then the question
    assert f"[1] fortress gateway news - result 1\nURL: {FIRST}\n" in messages[0]["content"]
    (key_id,) = _rows(home, "SELECT key_id FROM playground_keys WHERE admin_name = 'admin'")[0]
    end = time.monotonic() + 10  # the search and the chat, both on the playground key, once written
    while (paths := _rows(home, "SELECT path, status FROM usage WHERE key_id = ? ORDER BY id", key_id))[
        -2:
    ] != [
        ("/api/web_search", 200),
        ("/api/chat", 200),
    ]:
        assert time.monotonic() < end, paths
        time.sleep(0.1)


def test_a_key_without_the_search_scope_is_told_so(stack: tuple[Fortress, Admin, Sim, Stand]) -> None:
    home, admin, _, _ = stack
    c, token = admin.login()
    plain = home.key("searcher")  # scope user
    status, lines = _chat(
        c,
        token,
        {
            "model": "llama3.2:1b",
            "messages": [{"role": "user", "content": "x"}],
            "web_search": True,
            "key": plain,
        },
    )
    assert status == 400
    assert lines[0]["error"] == (
        "web search failed: refused by the proxy's policy: "
        "forbidden: /api/web_search needs a key with the search scope"
    )


def test_without_search_configured_the_toggle_is_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    with playground_stack(tmp_path_factory.mktemp("pg-nosearch"), "u", "--models", "llama3.2:1b") as (
        _,
        admin,
        _,
    ):
        c, token = admin.login()
        assert 'id="pg-web-search" disabled>' in c.get("/playground").text
        _make_key(c, token, user="u")
        body = {"model": "llama3.2:1b", "messages": [{"role": "user", "content": "x"}], "web_search": True}
        assert _chat(c, token, body) == (
            400,
            [{"error": "web search is not configured on this proxy ([search] in config.toml)"}],
        )


@pytest.fixture
def page(browser: Browser, stack: tuple[Fortress, Admin, Sim, Stand]) -> Iterator[Page]:
    pg = new_page(browser, stack[1].url)
    sign_in(pg)
    yield pg
    pg.context.close()


@pytest.mark.browser
def test_in_chromium_the_answer_shows_its_sources_as_links(page: Page) -> None:
    page.goto("/playground")
    if page.locator("#pg-key-stored code").count() == 0:
        page.get_by_label("User the key belongs to").select_option("searcher")
        page.get_by_role("button", name="Create playground key").click()
    ensure_key(page)
    page.get_by_role("button", name="New conversation").click()
    page.get_by_label("Model", exact=True).select_option("llama3.2:1b")
    page.get_by_label("Max tokens to generate (num_predict)").fill("20")
    page.get_by_label("Search the web for this answer").check()
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_role("button", name="Send message").click()
    expect(page.locator("#pg-status")).to_have_text("Done.", timeout=20_000)
    links = answer(page).get_by_role("navigation", name="Sources").get_by_role("link")
    expect(links).to_have_count(5)
    expect(links.first).to_have_text("fortress gateway news - result 1")
    expect(links.first).to_have_attribute("href", FIRST)
    expect(links.first).to_have_attribute("rel", "noopener noreferrer")
    expect(answer(page).locator(".stats")).to_contain_text("llama3.2:1b")
    page.reload()  # kept with the conversation
    expect(answer(page).get_by_role("link")).to_have_count(5)

    # sources from an imported file are links only when they are http(s), and never markup
    hostile = {
        "version": 1,
        "messages": [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": "a",
                "sources": [
                    {"title": "<img src=x onerror=window.__xss=1>", "url": "https://ok.example/"},
                    {"title": "js", "url": "javascript:window.__xss=2"},
                    {"title": "data", "url": "data:text/html,<script>window.__xss=3</script>"},
                    {"title": "relative", "url": "/admin"},
                ],
            },
        ],
    }
    page.get_by_label("Import history (JSON file)").set_input_files(
        files=[{"name": "h.json", "mimeType": "application/json", "buffer": json.dumps(hostile).encode()}]
    )
    links = answer(page).get_by_role("link")
    expect(links).to_have_count(1)
    expect(links).to_have_text("<img src=x onerror=window.__xss=1>")
    expect(links).to_have_attribute("href", re.compile(r"^https://ok\.example/$"))
    assert page.evaluate("window.__xss") is None and answer(page).locator("img").count() == 0
    page.get_by_role("button", name="New conversation").click()
