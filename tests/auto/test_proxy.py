"""Model "auto" through the real proxy: a simulator whose models differ in capabilities, the official
clients, several keys, the usage rows, and a provider as a candidate."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.conftest import Fortress, Sim, make_fortress, start_sim, stop

IMG = "iVBORw0KGgo="
# capabilities as the simulator reports them; on disk nomic < qwen < llama3.2 < deepseek-r1 < llava
MODELS = "llava:7b,deepseek-r1:7b,qwen2.5:0.5b,llama3.2:latest,nomic-embed-text:latest"
SMALLEST = "qwen2.5:0.5b"  # the smallest with completion, and with tools
TOOL = {
    "type": "function",
    "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture(scope="module")
def backend() -> Iterator[Sim]:
    s = start_sim("--models", MODELS, "--journal-bodies", name="caps")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def provider() -> Iterator[Sim]:
    s = start_sim("--provider", "--models", "gpt-4o", "--journal-bodies", name="prov")
    yield s
    stop(s.proc)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, backend: Sim, provider: Sim) -> Iterator[Fortress]:
    extra = (
        "[[backends]]\n"
        'name = "prov"\n'
        f'url = "{provider.url}/v1"\n'
        'type = "openai"\n'
        'models = ["gpt-4o"]\n'
        'capabilities = ["completion", "vision", "tools"]\n'
    )
    f = make_fortress(tmp_path_factory.mktemp("auto"), [("local", backend.url)], extra)
    f.serve()
    yield f
    f.stop()


def post(gw: Fortress, key: str, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gw.url}{path}", json=body, headers={"Authorization": f"Bearer {key}", **headers}, timeout=30
    )


def sent_model(sim: Sim, path: str) -> str:
    """The model named in the body of the last request the backend got on `path`."""
    last = [r for r in sim.requests() if r["path"] == path][-1]
    return json.loads(last["body"])["model"]


def test_each_need_goes_to_a_model_that_has_it(gw: Fortress, backend: Sim) -> None:
    key = gw.key("alice")
    cases = [
        (
            "/api/chat",
            {"messages": [{"role": "user", "content": "what is this", "images": [IMG]}]},
            "llava:7b",
        ),
        ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "tools": [TOOL]}, SMALLEST),
        ("/api/generate", {"prompt": "why?", "think": True}, "deepseek-r1:7b"),
        ("/api/embed", {"input": ["a", "b"]}, "nomic-embed-text:latest"),
        ("/api/embeddings", {"prompt": "a"}, "nomic-embed-text:latest"),
        ("/v1/embeddings", {"input": "a"}, "nomic-embed-text:latest"),
        ("/api/generate", {"prompt": "hi"}, SMALLEST),
    ]
    for path, body, expected in cases:
        r = post(gw, key, path, {"model": "auto", "stream": False, **body})
        assert r.status_code == 200, (path, r.text)
        assert r.headers["X-Fortress-Model"] == expected, path
        assert sent_model(backend, path) == expected  # what went upstream
        if "model" in r.json():  # Ollama echoes the model it was sent; OpenAI's shape has it too
            assert r.json()["model"] == expected


def test_the_official_clients_see_the_choice(gw: Fortress) -> None:
    key = gw.key("alice")
    client = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {key}"})
    answer = client.chat(model="auto", messages=[{"role": "user", "content": "describe", "images": [IMG]}])
    assert answer.model == "llava:7b" and answer.message.content
    streamed = list(client.generate(model="auto", prompt="hi", think=True, stream=True))
    assert {p.model for p in streamed} == {"deepseek-r1:7b"} and streamed[-1].done
    assert len(client.embed(model="auto", input=["x"]).embeddings) == 1

    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0)
    raw = oa.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    done = raw.parse()
    assert raw.headers["x-fortress-model"] == done.model == SMALLEST
    assert done.choices[0].finish_reason == "tool_calls"
    with oa.chat.completions.with_streaming_response.create(
        model="auto", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as streaming:
        models = {chunk.model for chunk in streaming.parse()}
        assert streaming.headers["x-fortress-model"] == SMALLEST and models == {SMALLEST}
    emb = oa.embeddings.with_raw_response.create(model="auto", input="x")
    assert emb.headers["x-fortress-model"] == emb.parse().model == "nomic-embed-text:latest"


def test_a_key_s_allow_list_is_never_escaped(gw: Fortress, backend: Sim) -> None:
    """Several keys, every kind of request: the choice is always one the key may use, or a 400."""
    keys = {
        "all": gw.key("alice"),
        "qwen": gw.key("alice", "--models", "qwen*"),
        "llava": gw.key("alice", "--models", "llava*"),
        "embed": gw.key("alice", "--models", "nomic*"),
        "prov": gw.key("alice", "--models", "prov/*"),
        "mixed": gw.key("alice", "--models", "llama3.2,deepseek*"),
    }
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMG}"}}
    requests = {  # the OpenAI routes for chats: the provider serves those
        "plain": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        "image": ("/v1/chat/completions", {"messages": [{"role": "user", "content": [image]}]}),
        "tools": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [TOOL]}),
        "think": ("/api/generate", {"prompt": "x", "think": True}),
        "embed": ("/api/embed", {"input": "x"}),
    }
    # key -> request -> the models that may be chosen (which one depends on what is loaded: the sizes
    # decide only between models equally loaded), or the capabilities the 400 names
    small, llama, r1, nomic = {SMALLEST}, {"llama3.2:latest"}, {"deepseek-r1:7b"}, {"nomic-embed-text:latest"}
    chat_models = {"qwen2.5:0.5b", "llama3.2:latest", "deepseek-r1:7b", "llava:7b"}
    expected: dict[str, dict[str, set[str] | str]] = {
        "all": {"plain": chat_models, "image": {"llava:7b"}, "tools": small | llama, "think": r1,
                "embed": nomic},
        "qwen": {"plain": small, "image": "vision", "tools": small, "think": "thinking",
                 "embed": "embedding"},
        "llava": {"plain": {"llava:7b"}, "image": {"llava:7b"}, "tools": "tools", "think": "thinking",
                  "embed": "embedding"},
        "embed": {"plain": "completion", "image": "completion and vision", "tools": "completion and tools",
                  "think": "completion and thinking", "embed": nomic},
        "prov": {"plain": {"prov/gpt-4o"}, "image": {"prov/gpt-4o"}, "tools": {"prov/gpt-4o"},
                 "think": "thinking", "embed": "embedding"},
        "mixed": {"plain": llama | r1, "image": "vision", "tools": llama, "think": r1, "embed": "embedding"},
    }  # fmt: skip
    for who, key in keys.items():
        for what, (path, body) in requests.items():
            r = post(gw, key, path, {"model": "auto", "stream": False, **body})
            want = expected[who][what]
            if isinstance(want, set):
                assert r.status_code == 200 and r.headers["X-Fortress-Model"] in want, (who, what, r.text)
            else:
                error = r.json()["error"]
                message = error["message"] if isinstance(error, dict) else error
                assert r.status_code == 400, (who, what)
                assert message == f'model "auto": no available model supports {want}', (who, what)
                assert "X-Fortress-Model" not in r.headers


def test_a_provider_model_is_sent_under_its_own_name(gw: Fortress, provider: Sim) -> None:
    key = gw.key("alice", "--models", "prov/*")
    r = post(
        gw, key, "/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.status_code == 200 and r.headers["X-Fortress-Model"] == "prov/gpt-4o"
    assert [q["model"] for q in provider.requests() if q["path"] == "/v1/chat/completions"][-1] == "gpt-4o"


def test_preferences_from_config_and_the_key(tmp_path: Path, backend: Sim) -> None:
    f = make_fortress(tmp_path, [("local", backend.url)], '[routing]\nauto_models = ["llama3*", "qwen*"]\n')
    f.serve()
    try:
        plain = {"model": "auto", "stream": False, "prompt": "hi"}
        assert (
            post(f, f.key("alice"), "/api/generate", plain).headers["X-Fortress-Model"] == "llama3.2:latest"
        )
        narrowed = f.key("alice", "--auto-models", "qwen*")
        assert post(f, narrowed, "/api/generate", plain).headers["X-Fortress-Model"] == "qwen2.5:0.5b"
        # the configured globs are the candidates: nothing outside them, even for an embedding
        r = post(f, f.key("alice"), "/api/embed", {"model": "auto", "input": "x"})
        assert r.status_code == 400 and "supports embedding" in r.json()["error"]
    finally:
        f.stop()


def test_errors_after_the_choice_name_it_and_usage_records_it(gw: Fortress) -> None:
    key = gw.key("bob")
    body = {"model": "auto", "stream": False, "prompt": "hi", "think": True}
    failed = post(gw, key, "/api/generate", body, **{"X-Sim-Fail": "1"})  # the backend answers 500
    assert failed.status_code == 500 and failed.headers["X-Fortress-Model"] == "deepseek-r1:7b"
    ok = post(gw, key, "/api/generate", body)
    rows = gw.usage({failed.headers["X-Request-ID"], ok.headers["X-Request-ID"]})
    assert rows == {
        failed.headers["X-Request-ID"]: ("deepseek-r1:7b", "local", 500),
        ok.headers["X-Request-ID"]: ("deepseek-r1:7b", "local", 200),
    }
    refused = post(gw, key, "/api/chat", {"model": "auto", "messages": [], "tools": [TOOL], "think": True})
    assert refused.status_code == 400
    assert (
        refused.json()["error"]
        == 'model "auto": no single available model supports completion, thinking and tools together'
    )
    assert gw.usage({refused.headers["X-Request-ID"]})[refused.headers["X-Request-ID"]] == (None, None, 400)


def test_capabilities_are_asked_once_per_model_digest(tmp_path: Path) -> None:
    sim = start_sim("--models", "llava:7b,qwen2.5:0.5b", "--journal-bodies", name="once")
    f = make_fortress(tmp_path, [("local", sim.url)], "[routing]\ninventory_interval_s = 0.2\n")
    f.serve()
    try:
        key = f.key("alice")
        end = time.monotonic() + 20
        while sum(r["path"] == "/api/tags" for r in sim.requests()) < 5:  # several full polls
            assert time.monotonic() < end
            time.sleep(0.1)
        assert _shown(sim) == ["llava:7b", "qwen2.5:0.5b"]
        assert sim.call("POST", "/api/pull", {"model": "deepseek-r1:7b", "stream": False}).status_code == 200
        while _shown(sim) != ["deepseek-r1:7b", "llava:7b", "qwen2.5:0.5b"]:  # a new digest: asked once
            assert time.monotonic() < end
            time.sleep(0.1)
        r = post(f, key, "/api/chat", {"model": "auto", "stream": False, "messages": [], "think": True})
        assert r.headers["X-Fortress-Model"] == "deepseek-r1:7b"
    finally:
        f.stop()
        sim.stop()


def _shown(sim: Sim) -> list[str]:
    return sorted(json.loads(r["body"])["model"] for r in sim.requests() if r["path"] == "/api/show")
