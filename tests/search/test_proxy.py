"""POST /api/web_search and /api/web_fetch through the real proxy: scopes, the stand-ins, the fallback,
the SSRF refusals, rate limits, usage rows, a client that leaves, a drain, and the event loop kept free."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim, make_fortress

from .conftest import Pages, Stand, dead_url

HOSTED_KEY = "hosted-secret-0123456789"
HOSTED: dict[int, Stand] = {}


@pytest.fixture
def searching(
    tmp_path: Path, sim: Sim, stand: Callable[..., Stand], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Fortress]]:
    """A proxy with web search set up as `searxng` says ("up", "down"); ollama.com is a stand-in, kept in
    HOSTED[proxy port]."""
    started: list[Fortress] = []
    monkeypatch.setenv("HOSTED_KEY", HOSTED_KEY)

    def start(searxng: str = "up", fetch_allow: str = "[]") -> Fortress:
        hosted = stand("--api-key", HOSTED_KEY)
        searx = stand().url if searxng == "up" else dead_url()
        extra = (
            "[search]\n"
            f'searxng_url = "{searx}"\n'
            'ollama_key_env = "HOSTED_KEY"\n'
            f'ollama_url = "{hosted.url}"\n'
            f"fetch_allow = {fetch_allow}\n"
            "timeout_s = 5\n"
        )
        home = tmp_path / f"f{len(started)}"
        home.mkdir()
        f = make_fortress(home, [("local", sim.url)], extra)
        HOSTED[f.port] = hosted
        f.serve()
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


def call(f: Fortress, key: str, path: str, body: object, timeout: float = 30) -> httpx.Response:
    return httpx.post(
        f"{f.url}{path}", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=timeout
    )


def test_search_answers_in_ollama_s_shape_for_search_and_admin_keys(
    searching: Callable[..., Fortress],
) -> None:
    f = searching()
    key = f.key("alice", "--scope", "search")
    r = call(f, key, "/api/web_search", {"query": "fortress gateway", "max_results": 3})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    results = r.json()["results"]
    assert len(results) == 3 and results[0] == {
        "title": "fortress gateway - result 1",
        "url": "https://www.duckduckgo.example/fortress-gateway/1",
        "content": "What duckduckgo knows about fortress gateway, part 1.",
    }
    assert HOSTED[f.port].requests() == []  # SearXNG answered: no fallback
    admin = f.key("root", "--scope", "admin")
    assert call(f, admin, "/api/web_search", {"query": "x"}).status_code == 200
    user = f.key("bob")
    refused = call(f, user, "/api/web_search", {"query": "x"})
    assert refused.status_code == 403
    assert refused.json() == {"error": "forbidden: /api/web_search needs a key with the search scope"}
    assert call(f, user, "/api/web_fetch", {"url": "https://example.com/"}).status_code == 403
    recorded = f.usage(
        {r.headers["X-Request-ID"], refused.headers["X-Request-ID"]}, "path, status, key_id, model, backend"
    )
    assert recorded[r.headers["X-Request-ID"]] == ("/api/web_search", 200, key[3:11], None, None)
    assert recorded[refused.headers["X-Request-ID"]][:2] == ("/api/web_search", 403)


def test_the_hosted_fallback_answers_when_searxng_is_down(searching: Callable[..., Fortress]) -> None:
    f = searching(searxng="down")
    key = f.key("alice", "--scope", "search")
    r = call(f, key, "/api/web_search", {"query": "fallback please", "max_results": 2})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    (asked,) = HOSTED[f.port].requests()
    assert (asked["path"], asked["auth"], asked["body"]) == (
        "/api/web_search",
        "ok",
        {"query": "fallback please", "max_results": 2},
    )
    assert HOSTED_KEY not in r.text


BAD = [  # (path, body, status, error)
    ("/api/web_search", {}, 400, "web_search: query must be a non-empty string"),
    ("/api/web_search", {"query": "x", "max_results": 0}, 400,
     "web_search: max_results must be a positive integer"),
    ("/api/web_search", [1], 400, "request body must be a JSON object"),
    ("/api/web_fetch", {"url": "file:///etc/passwd"}, 400,
     "web_fetch: only http and https URLs can be fetched, not file"),
    ("/api/web_fetch", {"url": "http://10.1.2.3/"}, 403,
     "web_fetch: forbidden: 10.1.2.3 is a private address"),
    ("/api/web_fetch", {"url": "http://169.254.169.254/latest/meta-data"}, 403,
     "web_fetch: forbidden: 169.254.169.254 is a cloud metadata address"),
    ("/api/web_fetch", {"url": "http://[::1]:8080/"}, 403, "web_fetch: forbidden: ::1 is a loopback address"),
    ("/api/web_fetch", {"url": "http://0x7f.1/"}, 403,
     "web_fetch: forbidden: 127.0.0.1 is a loopback address"),
]  # fmt: skip


def test_bad_requests_and_forbidden_targets_in_ollama_s_error_shape(
    searching: Callable[..., Fortress],
) -> None:
    f = searching()
    key = f.key("alice", "--scope", "search")
    for path, body, status, error in BAD:
        r = call(f, key, path, body)
        assert (r.status_code, r.json()) == (status, {"error": error}), body
    garbled = httpx.post(
        f"{f.url}/api/web_search", content=b"{nope", headers={"Authorization": f"Bearer {key}"}
    )
    assert garbled.status_code == 400 and garbled.json()["error"].startswith("invalid JSON in request body")


def test_fetch_refuses_loopback_and_redirects_into_private_ranges(
    searching: Callable[..., Fortress], pages: Pages
) -> None:
    f = searching(fetch_allow='["127.0.0.1/32"]')  # the page server's address only
    key = f.key("alice", "--scope", "search")
    page = call(f, key, "/api/web_fetch", {"url": pages.url("/page.html")})
    assert page.status_code == 200 and page.json()["title"] == "The Page"
    assert set(page.json()) == {"title", "content", "links"}
    refusals = {
        pages.url("/page.html", host="127.0.0.2"): "127.0.0.2 is a loopback address",
        pages.url("/page.html", host="localhost"): "localhost (::1) is a loopback address",
        pages.url(f"/redirect?to=http://127.0.0.2:{pages.port}/page.html"): "127.0.0.2 is a loopback address",
        pages.url("/redirect?to=http://192.168.1.1/&status=307"): "192.168.1.1 is a private address",
        pages.url(
            "/redirect?to=http://[::ffff:10.0.0.1]/"
        ): "::ffff:a00:1 is a private address inside an IPv6",
    }
    for url, why in refusals.items():
        r = call(f, key, "/api/web_fetch", {"url": url})
        assert r.status_code == 403 and why in r.json()["error"], (url, r.text)
    to_file = call(f, key, "/api/web_fetch", {"url": pages.url("/redirect?to=file:///etc/passwd")})
    assert to_file.status_code == 400 and "only http and https" in to_file.json()["error"]
    assert set(pages.hosts) == {f"127.0.0.1:{pages.port}"}  # nothing refused was ever contacted


def test_not_there_until_configured(fortress: Fortress) -> None:
    key = fortress.key("alice", "--scope", "search")
    for path in ("/api/web_search", "/api/web_fetch"):
        r = call(fortress, key, path, {"query": "x", "url": "https://example.com/"})
        assert (r.status_code, r.json()) == (404, {"error": f"path {path} not found"})


def test_searches_are_rate_limited_like_other_requests(searching: Callable[..., Fortress]) -> None:
    f = searching()
    key = f.key("alice", "--scope", "search", "--rate", "3/1m")  # f.key() spends one to see it work
    answers = [call(f, key, "/api/web_search", {"query": "x"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "3" and "Retry-After" in answers[2].headers


def _raw_post(port: int, key: str, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /api/web_fetch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(body), body)
    )
    return sock


def _wait(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, what
        time.sleep(0.02)


def test_a_slow_fetch_neither_blocks_the_worker_nor_outlives_its_client(
    searching: Callable[..., Fortress], pages: Pages
) -> None:
    f = searching(fetch_allow='["127.0.0.1/32"]')
    key = f.key("alice", "--scope", "search")
    sock = _raw_post(f.port, key, json.dumps({"url": pages.url("/slow")}).encode())
    _wait(lambda: len(pages.hosts) == 1, "the page server never saw the fetch")
    # the one worker keeps serving while the fetch waits on the page
    assert httpx.get(f"{f.url}/api/version", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert call(f, key, "/api/web_search", {"query": "meanwhile"}).status_code == 200
    sock.close()  # the client leaves: the fetch is cancelled and recorded as 499
    with closing(sqlite3.connect(f.db)) as conn:
        _wait(
            lambda: (
                conn.execute("SELECT status FROM usage WHERE path = '/api/web_fetch'").fetchall() == [(499,)]
            ),
            "no 499 usage row for the abandoned fetch",
        )
    pages.release.set()
    assert call(f, key, "/api/web_fetch", {"url": pages.url("/page.html")}).status_code == 200


def test_a_drain_lets_a_fetch_in_flight_finish(searching: Callable[..., Fortress], pages: Pages) -> None:
    f = searching(fetch_allow='["127.0.0.1/32"]')
    key = f.key("alice", "--scope", "search")
    answer: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: answer.append(call(f, key, "/api/web_fetch", {"url": pages.url("/slow")}))
    )
    worker.start()
    _wait(lambda: len(pages.hosts) == 1, "the page server never saw the fetch")
    assert f.proc is not None
    f.proc.terminate()  # SIGTERM: drain
    time.sleep(0.3)
    assert f.proc.poll() is None  # still draining: the fetch is in flight
    pages.release.set()
    worker.join(15)
    assert answer and answer[0].status_code == 200 and answer[0].json()["content"] == "late"
    assert answer[0].headers["connection"] == "close"
    assert f.proc.wait(15) == 0
