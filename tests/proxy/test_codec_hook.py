"""The response-codec hook through the real proxy process: a test kind ("upper", tests/proxy/upper.py)
whose codec upper-cases the generated text of the simulator's NDJSON. Fortress must feed the codec the
de-chunked body, frame its output itself (chunked to HTTP/1.1 clients, close-delimited to HTTP/1.0
ones), account the tokens the codec read, and end a cut stream through the codec."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.conftest import PY, Fortress, Sim, make_fortress, start, wait_port
from tests.sim.test_wire import exchange as raw_exchange


@pytest.fixture(scope="module")
def upper(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[tuple[Fortress, str]]:
    f = make_fortress(tmp_path_factory.mktemp("upper"), [])
    key = f.key()  # before the config names a kind only the launcher below knows
    with f.config.open("a") as config:
        config.write(f'[[backends]]\nname = "up"\nurl = "{sim.url}"\ntype = "upper"\n')
    f.proc = start([PY, "-m", "tests.proxy.upper", "serve", "--config", str(f.config)])
    wait_port(f.port, f.proc)
    yield f, key
    f.stop()


def test_a_stream_goes_through_the_codec_and_is_framed_by_fortress(
    upper: tuple[Fortress, str], sim: Sim
) -> None:
    f, key = upper
    direct = "".join(
        part.response for part in ollama.Client(host=sim.url).generate("llama3.2", "hi", stream=True)
    )
    through = ollama.Client(host=f.url, headers={"Authorization": f"Bearer {key}"})
    parts = list(through.generate("llama3.2", "hi", stream=True))
    assert "".join(p.response for p in parts) == direct.upper() and direct != direct.upper()
    assert parts[-1].done and parts[-1].eval_count == 12
    with httpx.stream(
        "POST",
        f"{f.url}/api/chat",
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {key}"},
    ) as r:
        assert (
            r.headers["transfer-encoding"] == "chunked"
            and r.headers["content-type"] == "application/x-ndjson"
        )
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert "".join(line["message"]["content"] for line in lines) == direct.upper()


def test_an_http10_client_gets_the_codec_output_close_delimited(upper: tuple[Fortress, str]) -> None:
    f, key = upper
    body = json.dumps({"model": "llama3.2", "prompt": "hi"}).encode()
    request = b"POST /api/generate HTTP/1.0\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (
        key.encode(),
        len(body),
        body,
    )
    answer = raw_exchange(f.port, request, timeout=20)
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    lines = [json.loads(line) for line in payload.splitlines()]
    assert lines[-1]["done"] and "".join(line["response"] for line in lines).isupper()


def test_a_cut_stream_ends_through_the_codec_and_the_connection_stays_usable(
    upper: tuple[Fortress, str],
) -> None:
    f, key = upper
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f.url, headers=headers, timeout=20) as client:
        with client.stream(
            "POST",
            "/api/generate",
            json={"model": "llama3.2", "prompt": "hi"},
            headers={"X-Sim-Die-After": "2"},
        ) as r:
            lines = [json.loads(line) for line in r.iter_lines() if line]
        assert len(lines) == 3 and lines[-1] == {"error": "BACKEND UP CLOSED THE CONNECTION"}
        again = client.post("/api/generate", json={"model": "llama3.2", "prompt": "hi", "stream": False})
        assert again.status_code == 200 and again.json()["response"].isupper()


def test_usage_comes_from_the_codec(upper: tuple[Fortress, str]) -> None:
    f, key = upper
    r = httpx.post(
        f"{f.url}/api/generate",
        json={"model": "llama3.2", "prompt": "count me", "stream": False},
        headers={"Authorization": f"Bearer {key}", "X-Request-ID": "codec-usage-1", "X-Sim-Tokens": "7"},
    )
    done = r.json()
    assert done["eval_count"] == 7
    query = (
        "SELECT status, backend, prompt_eval_count, eval_count FROM usage WHERE request_id = 'codec-usage-1'"
    )
    end = time.monotonic() + 10
    row = None
    while row is None and time.monotonic() < end:  # the usage writer commits in batches
        with sqlite3.connect(f.db) as db:
            row = db.execute(query).fetchone()
        time.sleep(0.1)
    assert row == (200, "up", done["prompt_eval_count"], 7)
