"""Ollama's web_search / web_fetch request and answer shapes, and SearXNG's answer read into them (pure).

Requests: `{"query": str, "max_results": int}` (Ollama's default 5, at most 10) and `{"url": str}`.
Answers: `{"results": [{"title", "url", "content"}]}`, every field a string, only http(s) URLs,
each URL once, at most `max_results` of them.
"""

from __future__ import annotations

from typing import Any

from fortress.search.errors import SearchError

DEFAULT_RESULTS = 5
MAX_RESULTS = 10
MAX_QUERY = 2000


def search_request(body: Any) -> tuple[str, int]:
    """(query, max_results) from a POST /api/web_search body; SearchError(400) when unusable.

    max_results above 10 is lowered to 10, as ollama.com does, rather than refused.
    """
    if not isinstance(body, dict):
        raise SearchError(400, "web_search: the body must be a JSON object")
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SearchError(400, "web_search: query must be a non-empty string")
    if len(query) > MAX_QUERY:
        raise SearchError(400, f"web_search: query is longer than {MAX_QUERY} characters")
    count = body.get("max_results", DEFAULT_RESULTS)
    if count is None:
        count = DEFAULT_RESULTS
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SearchError(400, "web_search: max_results must be a positive integer")
    return query.strip(), min(count, MAX_RESULTS)


def fetch_request(body: Any) -> str:
    """The URL from a POST /api/web_fetch body; SearchError(400) when absent."""
    if not isinstance(body, dict):
        raise SearchError(400, "web_fetch: the body must be a JSON object")
    url = body.get("url")
    if not isinstance(url, str) or not url.strip():
        raise SearchError(400, "web_fetch: url must be a non-empty string")
    return url.strip()


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def normalise(items: Any, limit: int) -> dict[str, list[dict[str, str]]]:
    """Result objects of any origin -> Ollama's answer; entries without an http(s) URL are dropped."""
    results: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in items if isinstance(items, list) else ():
        if len(results) >= limit:
            break
        if not isinstance(item, dict):
            continue
        url = _text(item.get("url"))
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        seen.add(url)
        results.append({"title": _text(item.get("title")), "url": url, "content": _text(item.get("content"))})
    return {"results": results}


def from_searxng(payload: Any, limit: int) -> dict[str, list[dict[str, str]]]:
    """SearXNG's `format=json` answer -> Ollama's shape; ValueError when SearXNG did not really answer.

    An empty result list while engines report failures (`unresponsive_engines`) means SearXNG could
    not search, not that nothing exists: the caller should try the fallback.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ValueError("not a SearXNG JSON answer (no 'results' list)")
    answer = normalise(payload["results"], limit)
    failed = payload.get("unresponsive_engines")
    if not answer["results"] and isinstance(failed, list) and failed:
        names = ", ".join(str(e[0]) if isinstance(e, list) and e else str(e) for e in failed[:3])
        raise ValueError(f"no results, its engines failed ({names})")
    return answer


def from_ollama(payload: Any, limit: int) -> dict[str, list[dict[str, str]]]:
    """ollama.com's web_search answer, re-checked (it is still input from the network)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("results"), list):
        raise ValueError("not a web_search answer (no 'results' list)")
    return normalise(payload["results"], limit)
