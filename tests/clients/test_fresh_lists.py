"""Issue 11.6: model lists through Fortress are as fresh as the backend's. /api/ps and /api/tags are
asked of the backends when the view is older than a second (concurrent requests share one refresh);
an unknown model makes Fortress look again once before its 404; a successful request marks the model
loaded there (an unload, unloaded)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from fortress.proxy.worker import LIST_MAX_AGE_S
from tests.clients.conftest import new_key, serving
from tests.conftest import Fortress, Sim, start_sim


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    s = start_sim(name="fresh")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> Iterator[Fortress]:
    with serving(tmp_path_factory.mktemp("fresh"), [("local", sim.url)]) as f:
        yield f


@pytest.fixture(scope="module")
def key(proxy: Fortress) -> str:
    return new_key(proxy, "lists")


@pytest.fixture(scope="module")
def client(proxy: Fortress, key: str) -> ollama.Client:
    return ollama.Client(host=proxy.url, headers={"Authorization": f"Bearer {key}"})


def loaded(c: ollama.Client) -> list[str]:
    return [m.model for m in c.ps().models]


def past_list_age() -> None:
    time.sleep(LIST_MAX_AGE_S + 0.2)  # the view Fortress holds is now older than it may serve as is


def test_ps_right_after_a_generate_lists_the_model(client: ollama.Client) -> None:
    assert "qwen2.5:0.5b" not in loaded(client)
    assert client.generate(model="qwen2.5:0.5b", prompt="hi").done
    assert "qwen2.5:0.5b" in loaded(client)  # at once, however old the view was


def test_an_unload_through_fortress_shows_at_once(client: ollama.Client) -> None:
    client.generate(model="llama3.2", prompt="hi")
    assert "llama3.2:latest" in loaded(client)
    client.generate(model="llama3.2", keep_alive=0)  # Ollama's unload request
    assert "llama3.2:latest" not in loaded(client)


def test_changes_made_on_the_backend_directly_show(client: ollama.Client, sim: Sim) -> None:
    loading = sim.call("POST", "/api/embed", {"model": "nomic-embed-text", "input": "x"})  # there, not here
    assert loading.status_code == 200
    past_list_age()
    assert "nomic-embed-text:latest" in loaded(client)
    sim.call("POST", "/api/embed", {"model": "nomic-embed-text", "input": [], "keep_alive": 0})
    past_list_age()
    assert "nomic-embed-text:latest" not in loaded(client)


def test_a_model_pulled_on_the_backend_is_usable_at_the_first_try(client: ollama.Client, sim: Sim) -> None:
    assert sim.call("POST", "/api/pull", {"model": "phi3:mini", "stream": False}).status_code == 200
    assert client.generate(model="phi3:mini", prompt="hi").done  # no 404 first
    assert "phi3:mini" in [m.model for m in client.list().models]


def test_tags_show_a_pull_on_the_backend(client: ollama.Client, sim: Sim) -> None:
    assert sim.call("POST", "/api/pull", {"model": "gemma2:2b", "stream": False}).status_code == 200
    past_list_age()
    assert "gemma2:2b" in [m.model for m in client.list().models]


def test_an_unknown_model_is_still_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="no-such-model", prompt="x")
    assert err.value.status_code == 404 and "not found" in err.value.error


def test_concurrent_requests_share_refreshes(proxy: Fortress, key: str, sim: Sim) -> None:
    async def burst(path: str, method: str = "GET", body: dict | None = None) -> list[int]:
        async with httpx.AsyncClient(base_url=proxy.url, headers={"X-API-Key": key}) as c:
            replies = await asyncio.gather(*(c.request(method, path, json=body) for _ in range(30)))
        return [r.status_code for r in replies]

    past_list_age()
    sim.clear()
    assert asyncio.run(burst("/api/ps")) == [200] * 30
    lists = [q for q in sim.requests() if q["path"] == "/api/ps"]
    assert 1 <= len(lists) < 10, len(lists)
    sim.clear()
    codes = asyncio.run(burst("/api/generate", "POST", {"model": "never-heard-of-it", "prompt": "x"}))
    assert codes == [404] * 30
    looked = [q for q in sim.requests() if q["path"] == "/api/tags"]
    assert 1 <= len(looked) < 10, len(looked)  # a few refreshes for thirty unknown models, not thirty
    assert not [q for q in sim.requests() if q["path"] == "/api/generate"]  # and nothing forwarded
