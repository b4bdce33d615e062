"""Issue 4: streams cut by a dying backend, per-backend caps with the fair queue, first-byte timeouts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Fortress, Sim
from tests.multi.conftest import auth, cluster, usage_rows, wait_until

CHAT = {"model": "mistral", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture(scope="module")
def proxy(sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fortress, str]]:
    f = cluster(tmp_path_factory.mktemp("faults"), sims)
    yield f, f.key("alice")
    f.stop()


def test_backend_dying_mid_stream_ends_ndjson_with_an_error_line(proxy: tuple[Fortress, str]) -> None:
    f, key = proxy
    headers = {**auth(key), "X-Sim-Die-After": "3", "X-Sim-Tokens": "10", "X-Request-ID": "cut-ndjson"}
    with httpx.Client() as client:
        r = client.post(f"{f.url}/api/generate", json={"model": "llama3.2", "prompt": "hi"}, headers=headers)
        lines = [json.loads(line) for line in r.text.splitlines()]  # the chunked body ended properly
        assert r.status_code == 200 and r.headers["X-Request-ID"] == "cut-ndjson"
        assert len(lines) == 4 and all("response" in line for line in lines[:3])
        assert set(lines[-1]) == {"error"} and "backend a" in lines[-1]["error"]
        again = client.get(f"{f.url}/api/version", headers=auth(key))  # the same client goes on
        assert again.status_code == 200
    rows = usage_rows(f, "request_id = 'cut-ndjson'")
    assert len(rows) == 1
    status, backend, error, path = rows[0]
    assert (status, backend, path) == (200, "a", "/api/generate") and "backend a" in error


def test_backend_dying_mid_stream_ends_sse_with_an_error_event(proxy: tuple[Fortress, str]) -> None:
    f, key = proxy
    headers = {**auth(key), "X-Sim-Die-After": "2", "X-Request-ID": "cut-sse"}
    r = httpx.post(f"{f.url}/v1/chat/completions", json=CHAT, headers=headers)
    events = [line.removeprefix("data: ") for line in r.text.split("\n\n") if line]
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert len(events) == 3 and "[DONE]" not in r.text
    assert all(json.loads(e)["object"] == "chat.completion.chunk" for e in events[:2])
    error = json.loads(events[-1])["error"]
    assert error["type"] == "api_error" and "closed the connection" in error["message"]
    rows = usage_rows(f, "request_id = 'cut-sse'")
    assert len(rows) == 1 and rows[0][0] == 200 and rows[0][1] in ("b", "c") and rows[0][2]


def test_first_byte_timeout_is_504_in_each_shape(
    sims: dict[str, Sim], tmp_path_factory: pytest.TempPathFactory
) -> None:
    f = cluster(tmp_path_factory.mktemp("slow"), sims, "[routing]\nfirst_byte_timeout_s = 0.2\n")
    try:
        key = f.key("alice")
        slow = {**auth(key), "X-Sim-Delay-Ms": "3000"}
        t0 = time.monotonic()
        r = httpx.post(f"{f.url}/api/generate", json={"model": "phi3", "prompt": "x"}, headers=slow)
        took = time.monotonic() - t0
        assert r.status_code == 504 and "did not answer in time" in r.json()["error"], r.text
        assert took < 1.5, took  # the sweeper checks twice a second
        v1 = httpx.post(f"{f.url}/v1/chat/completions", json={**CHAT, "stream": False}, headers=slow)
        assert v1.status_code == 504 and v1.json()["error"]["type"] == "api_error"
        assert "did not answer in time" in v1.json()["error"]["message"]
    finally:
        f.stop()


def _burst(f: Fortress, key: str, count: int, tokens: int) -> tuple[list[httpx.Response], float]:
    headers = {**auth(key), "X-Sim-Tokens": str(tokens), "X-Sim-Rate": "100"}
    body = {"model": "llama3.2", "prompt": "hi", "stream": False}
    t0 = time.monotonic()
    with ThreadPoolExecutor(count) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(f"{f.url}/api/generate", json=body, headers=headers, timeout=20),
                range(count),
            )
        )
    return answers, time.monotonic() - t0


def test_backend_cap_queues_requests_fairly_and_times_them_out(sims: dict[str, Sim], tmp_path: Path) -> None:
    f = cluster(tmp_path / "queue", sims, cap="max_concurrent = 1")
    try:
        answers, took = _burst(f, f.key("alice"), 8, tokens=10)  # llama3.2 is only on a: 8 x 0.1 s
        assert [r.status_code for r in answers] == [200] * 8
        assert took >= 0.75, took  # one at a time on a
    finally:
        f.stop()
    short = cluster(tmp_path / "short", sims, "[routing]\nqueue_timeout_s = 0.2\n", cap="max_concurrent = 1")
    try:
        key = short.key("alice")
        # one stream holds a's only slot for as long as this test keeps it open: every request meanwhile
        # waits its 0.2 s in the queue and is refused, however slowly the machine runs
        hold = {**auth(key), "X-Sim-Tokens": "1000", "X-Sim-Rate": "10"}
        with (
            httpx.Client(timeout=20) as client,
            client.stream(
                "POST", f"{short.url}/api/generate", json={"model": "llama3.2", "prompt": "hi"}, headers=hold
            ) as held,
        ):
            assert held.status_code == 200
            answers, _ = _burst(short, key, 4, tokens=1)
            assert [r.status_code for r in answers] == [503] * 4, [r.text for r in answers]
            for r in answers:
                assert r.headers["Retry-After"] == "1" and "busy" in r.json()["error"]
        # the stream's client left: its slot is free again (once the proxy has seen it go)
        wait_until(lambda: _burst(short, key, 1, tokens=1)[0][0].status_code == 200, 10, "slot freed")
    finally:
        short.stop()
