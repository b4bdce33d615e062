"""Ollama's web_search / web_fetch request checks and answer normalisation (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from fortress.search.errors import SearchError
from fortress.search.shapes import fetch_request, from_ollama, from_searxng, normalise, search_request


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"query": "ollama"}, ("ollama", 5)),
        ({"query": "  ollama  ", "max_results": 3}, ("ollama", 3)),
        ({"query": "q", "max_results": None}, ("q", 5)),
        ({"query": "q", "max_results": 10}, ("q", 10)),
        ({"query": "q", "max_results": 500}, ("q", 10)),
        ({"query": "q", "max_results": 0}, "max_results must be a positive integer"),
        ({"query": "q", "max_results": -1}, "max_results must be a positive integer"),
        ({"query": "q", "max_results": "3"}, "max_results must be a positive integer"),
        ({"query": "q", "max_results": True}, "max_results must be a positive integer"),
        ({"query": "q", "max_results": 2.5}, "max_results must be a positive integer"),
        ({}, "query must be a non-empty string"),
        ({"query": "   "}, "query must be a non-empty string"),
        ({"query": ["a"]}, "query must be a non-empty string"),
        ({"query": "x" * 2001}, "query is longer than 2000 characters"),
        (["query"], "the body must be a JSON object"),
    ],
)
def test_search_request(body: Any, expected: tuple[str, int] | str) -> None:
    if isinstance(expected, tuple):
        assert search_request(body) == expected
    else:
        with pytest.raises(SearchError) as caught:
            search_request(body)
        assert caught.value.status == 400 and caught.value.message == f"web_search: {expected}"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"url": " https://example.org/ "}, "https://example.org/"),
        ({"url": ""}, None),
        ({"url": 5}, None),
        ({}, None),
        ("https://example.org", None),
    ],
)
def test_fetch_request(body: Any, expected: str | None) -> None:
    if expected is not None:
        assert fetch_request(body) == expected
    else:
        with pytest.raises(SearchError) as caught:
            fetch_request(body)
        assert caught.value.status == 400


def test_normalise_keeps_only_string_fields_http_urls_and_each_url_once() -> None:
    items = [
        {"title": " A ", "url": "https://a.example/", "content": " text ", "engine": "x", "score": 1.0},
        {"title": "dup", "url": "https://a.example/", "content": ""},
        {"title": "no url", "content": "x"},
        {"title": "js", "url": "javascript:alert(1)"},
        {"title": 5, "url": "http://b.example/", "content": None},
        "junk",
        {"title": "c", "url": "https://c.example/", "content": "c"},
    ]
    assert normalise(items, 10) == {
        "results": [
            {"title": "A", "url": "https://a.example/", "content": "text"},
            {"title": "", "url": "http://b.example/", "content": ""},
            {"title": "c", "url": "https://c.example/", "content": "c"},
        ]
    }
    assert len(normalise(items, 2)["results"]) == 2
    assert normalise("not a list", 5) == {"results": []}


def test_searxng_answer() -> None:
    payload = {
        "query": "q",
        "results": [{"title": "t", "url": "https://t.example/", "content": "c"}],
        "answers": [],
        "unresponsive_engines": [["google", "timeout"]],
    }
    assert from_searxng(payload, 5) == {
        "results": [{"title": "t", "url": "https://t.example/", "content": "c"}]
    }
    assert from_searxng({"results": [], "unresponsive_engines": []}, 5) == {"results": []}  # truly nothing
    with pytest.raises(ValueError, match=r"no results, its engines failed \(google, bing\)"):
        from_searxng({"results": [], "unresponsive_engines": [["google", "timeout"], ["bing", "CAPTCHA"]]}, 5)
    for junk in (None, [], {"error": "No query"}, {"results": "x"}):
        with pytest.raises(ValueError, match="not a SearXNG JSON answer"):
            from_searxng(junk, 5)


def test_hosted_answer() -> None:
    assert from_ollama({"results": [{"title": "t", "url": "https://t/", "content": "c"}]}, 1)["results"][0][
        "url"
    ]
    with pytest.raises(ValueError, match="not a web_search answer"):
        from_ollama({"error": "unauthorized"}, 5)
