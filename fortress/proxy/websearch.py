"""POST /api/web_search and /api/web_fetch, answered by Fortress itself (DESIGN §6.4).

The gate has done what it does for every request (key, the `search` or `admin` scope, blocked
endpoints, rate limits, the JSON body read once); here the worker's one `WebSearch`
(fortress/search/service.py) does the work in a task of its own, so the event loop keeps serving while
SearXNG, ollama.com or a fetched page take their time. The task belongs to the exchange: a client
that goes away, or a drain that runs out of time, cancels it (Exchange.client_lost), and the answer
(Ollama's shapes, errors as `{"error": ...}`) is written and accounted like any other response.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from fortress.http.replies import LocalReply
from fortress.search import shapes
from fortress.search.errors import SearchError

if TYPE_CHECKING:
    from fortress.proxy.exchange import Exchange
    from fortress.search.service import WebSearch

log = logging.getLogger("fortress.proxy")
SEARCH = "/api/web_search"


def start(ex: Exchange) -> None:
    """Begin the search or fetch of this exchange (its parsed body in `ex.doc`)."""
    service = ex.w.search
    assert service is not None  # the gate answers 404 for these routes while search is not configured
    ex.answered_by(ex.w.loop.create_task(_run(ex, service)))


async def _run(ex: Exchange, service: WebSearch) -> None:
    try:
        answer = await _answer(ex.route.name, ex.doc, service)
    except SearchError as exc:
        ex.fail(exc.status, exc.message)
        return
    except Exception:  # a bug must still end the request, never leave the client waiting
        log.exception("web search failed")
        ex.fail(500, "internal error in the gateway")
        return
    ex.reply(LocalReply(200, json.dumps(answer).encode(), headers=ex.admit.rate_headers), None)


async def _answer(route: str, doc: dict | None, service: WebSearch) -> dict[str, Any]:
    if route == SEARCH:
        query, count = shapes.search_request(doc)
        return await service.search(query, count)
    return await service.fetch(shapes.fetch_request(doc))
