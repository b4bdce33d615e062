"""web_search against the stand-ins (real processes): SearXNG first, ollama.com's search as the fallback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fortress.config import SearchConfig
from fortress.search.errors import SearchError
from fortress.search.service import WebSearch

from .conftest import Stand, dead_url

KEY = "ok-secret-key-0123456789"


async def search(query: str, max_results: int, env: dict[str, str] | None = None, **settings: Any) -> dict:
    web = WebSearch(SearchConfig(**settings), environ=env or {})
    try:
        return await web.search(query, max_results)
    finally:
        await web.aclose()


async def failure(query: str, env: dict[str, str] | None = None, **settings: Any) -> SearchError:
    with pytest.raises(SearchError) as caught:
        await search(query, 5, env, **settings)
    return caught.value


def _ollama_shape(answer: dict) -> None:
    assert set(answer) == {"results"}
    for item in answer["results"]:
        assert set(item) == {"title", "url", "content"}
        assert all(isinstance(v, str) and v for v in item.values())
        assert item["url"].startswith("https://")


async def test_searxng_answers_in_ollama_s_shape(stand: Callable[..., Stand]) -> None:
    s = stand()
    answer = await search("fortress gateway", 3, searxng_url=s.url)
    _ollama_shape(answer)
    assert answer["results"][0] == {
        "title": "fortress gateway - result 1",
        "url": "https://www.duckduckgo.example/fortress-gateway/1",
        "content": "What duckduckgo knows about fortress gateway, part 1.",
    }
    assert len(answer["results"]) == 3  # max_results honoured (SearXNG gave 8)
    (asked,) = s.requests()
    assert (asked["method"], asked["path"]) == ("GET", "/search")
    assert asked["query"] == {"q": "fortress gateway", "format": "json"}
    assert asked["auth"] == "none"  # SearXNG never sees the ollama.com key


async def test_the_fallback_is_used_when_searxng_is_down(stand: Callable[..., Stand]) -> None:
    hosted = stand("--api-key", KEY)
    answer = await search(
        "tides",
        4,
        {"OLLAMA_KEY": KEY},
        searxng_url=dead_url(),
        ollama_key_env="OLLAMA_KEY",
        ollama_url=hosted.url,
    )
    _ollama_shape(answer)
    assert [r["title"] for r in answer["results"]] == [f"tides (hosted {i})" for i in range(1, 5)]
    (asked,) = hosted.requests()
    assert (asked["path"], asked["body"], asked["auth"]) == (
        "/api/web_search",
        {"query": "tides", "max_results": 4},
        "ok",
    )


@pytest.mark.parametrize("flag", ["--no-json", "--engines-fail"])
async def test_the_fallback_is_used_when_searxng_cannot_search(
    stand: Callable[..., Stand], flag: str
) -> None:
    searxng = stand(flag)
    hosted = stand("--api-key", KEY)
    answer = await search(
        "q", 2, {"K": KEY}, searxng_url=searxng.url, ollama_key_env="K", ollama_url=hosted.url
    )
    assert [r["url"] for r in answer["results"]] == [
        "https://hosted.example/q/1",
        "https://hosted.example/q/2",
    ]
    assert len(searxng.requests()) == 1 and len(hosted.requests()) == 1


async def test_searxng_first_the_fallback_untouched_when_it_answers(stand: Callable[..., Stand]) -> None:
    s = stand("--api-key", KEY)  # one process plays both: only /search may be asked
    answer = await search("q", 10, {"K": KEY}, searxng_url=s.url, ollama_key_env="K", ollama_url=s.url)
    assert len(answer["results"]) == 8
    assert [r["path"] for r in s.requests()] == ["/search"]


async def test_hosted_alone_and_max_results_capped_at_ten(stand: Callable[..., Stand]) -> None:
    hosted = stand("--api-key", KEY)
    answer = await search("q", 50, {"K": KEY}, ollama_key_env="K", ollama_url=hosted.url)
    assert len(answer["results"]) == 10
    assert hosted.requests()[0]["body"]["max_results"] == 50  # our cap is ours; the answer is trimmed


async def test_both_failing_is_502_naming_each_cause_and_never_the_key(stand: Callable[..., Stand]) -> None:
    hosted = stand("--api-key", "a-different-key")
    error = await failure("q", {"K": KEY}, searxng_url=dead_url(), ollama_key_env="K", ollama_url=hosted.url)
    assert error.status == 502
    assert error.message.startswith("web_search failed: searxng: ")
    assert "ollama.com: HTTP 401" in error.message
    assert KEY not in error.message
    assert hosted.requests()[0]["auth"] == "wrong"


async def test_an_empty_key_variable_is_a_clear_failure_and_sends_nothing(
    stand: Callable[..., Stand],
) -> None:
    hosted = stand()
    error = await failure("q", {}, ollama_key_env="MISSING_VAR", ollama_url=hosted.url)
    assert error.status == 502
    assert error.message == "web_search failed: ollama.com: the environment variable MISSING_VAR is empty"
    assert hosted.requests() == []


async def test_search_is_off_until_configured() -> None:
    error = await failure("q")
    assert (error.status, error.message) == (404, "web search is not configured on this gateway")


async def test_a_searxng_that_never_answers_times_out_then_falls_back(stand: Callable[..., Stand]) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts connections, never answers
    try:
        hosted = stand("--api-key", KEY)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        answer = await search(
            "q", 1, {"K": KEY}, searxng_url=url, ollama_key_env="K", ollama_url=hosted.url, timeout_s=0.5
        )
        assert len(answer["results"]) == 1
        error = await failure("q", searxng_url=url, timeout_s=0.5)
        assert (error.status, error.message) == (504, "web_search failed: searxng: no answer within 0.5s")
    finally:
        silent.close()


def test_the_stand_in_speaks_searxng_s_json_format(stand: Callable[..., Stand]) -> None:
    """What a real SearXNG gives (searx/webutils.py get_json_response), field for field."""
    s = stand("--results", "2")
    body = httpx.get(f"{s.url}/search", params={"q": "ollama", "format": "json"}).json()
    assert set(body) == {
        "query",
        "results",
        "answers",
        "corrections",
        "infoboxes",
        "suggestions",
        "unresponsive_engines",
    }
    assert body["query"] == "ollama" and len(body["results"]) == 2
    first = body["results"][0]
    assert {
        "url",
        "title",
        "content",
        "engine",
        "engines",
        "template",
        "parsed_url",
        "positions",
        "score",
        "category",
    } <= set(first)
    assert first["parsed_url"][:3] == ["https", "www.duckduckgo.example", "/ollama/1"]
    assert (
        httpx.post(f"{s.url}/search", data={"q": "ollama", "format": "json"}).json()["results"]
        == body["results"]
    )
    no_query = httpx.get(f"{s.url}/search", params={"format": "json"})
    assert (no_query.status_code, no_query.json()) == (400, {"error": "No query"})
    assert httpx.get(f"{s.url}/search", params={"q": "x"}).headers["content-type"].startswith("text/html")
    forbidden = httpx.get(f"{stand('--no-json').url}/search", params={"q": "x", "format": "json"})
    assert forbidden.status_code == 403
