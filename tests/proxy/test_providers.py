"""Provider models through the Ollama API (issue 10, DESIGN §6.3): the official `ollama` client against
`P/M` on a real Fortress, the provider a simulator in provider mode. Answers are Ollama's shapes with
the provider's token counts; the provider sees its own model name and credential, never the client's key.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.conftest import Sim
from tests.proxy.providers import (
    CHAT_MODEL,
    EMBED_MODEL,
    PROVIDER_KEY,
    Stack,
    provider_block,
    provider_usage,
    running,
)
from tests.translate.conftest import CITY, PNG, WEATHER

CHAT = f"prov/{CHAT_MODEL}"
ROW = "model, backend, status, stream, prompt_eval_count, eval_count"  # the usage columns checked
EMBED = f"prov/{EMBED_MODEL}"


def tables(provider: Sim) -> str:
    url = f"{provider.url}/v1"
    # gpt-9: configured here, unknown to the provider; "stale" holds a credential the provider refuses
    models = [CHAT_MODEL, EMBED_MODEL, "gpt-9"]
    prov = provider_block("prov", url, models, capabilities=["completion", "tools", "vision"])
    return prov + provider_block("stale", url, [CHAT_MODEL], credential_env="FORTRESS_TEST_WRONG_KEY")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running(tmp_path_factory.mktemp("providers"), tables) as s:
        yield s


def client(stack: Stack, request_id: str = "") -> ollama.Client:
    """The official client with the key; `request_id`: sent as X-Request-ID, which Fortress keeps."""
    named = {"X-Request-ID": request_id} if request_id else {}
    return ollama.Client(host=stack.fortress.url, headers={**stack.auth, **named})


def test_list_show_and_ps_name_provider_models_p_m(stack: Stack) -> None:
    c = client(stack)
    listed = {m.model: m for m in c.list().models}
    assert {CHAT, EMBED, "stale/gpt-4o-mini", "llama3.2:latest"} <= set(listed)
    assert listed[CHAT].size == 0 and listed[CHAT].digest and listed[CHAT].modified_at is not None
    stack.clear()
    shown = c.show(CHAT)
    assert shown.capabilities == ["completion", "tools", "vision"]  # as configured for the provider
    assert shown.modelinfo is not None and f"FROM {CHAT}" in (shown.modelfile or "")
    assert stack.seen() == []  # answered from configuration: a provider has no /api/show
    c.chat(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    running_now = {m.model: m for m in c.ps().models}
    assert CHAT in running_now and running_now[CHAT].expires_at is not None
    assert EMBED not in running_now  # never used: not "loaded"
    assert c.show("llama3.2").capabilities  # an Ollama model's /api/show still goes to its backend


def test_a_key_sees_and_uses_only_the_provider_models_it_may(stack: Stack) -> None:
    key = stack.fortress.key("bob", "--models", "prov/gpt-4o*")
    c = ollama.Client(host=stack.fortress.url, headers={"Authorization": f"Bearer {key}"})
    assert [m.model for m in c.list().models] == [CHAT]
    with pytest.raises(ollama.ResponseError) as refused:
        c.show(EMBED)
    assert refused.value.status_code == 403


def test_chat_stream_with_an_image_counts_what_the_provider_counted(stack: Stack) -> None:
    stack.clear()
    message = {"role": "user", "content": "What is in this picture?", "images": [PNG]}
    parts = list(
        client(stack, "chat-image").chat(
            model=CHAT, messages=[message], stream=True, options={"num_predict": 5}
        )
    )
    (seen,) = stack.seen()
    assert seen["path"] == "/v1/chat/completions" and seen["model"] == CHAT_MODEL  # its own name
    headers = {name.lower(): value for name, value in seen["headers"]}
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"  # its own credential
    assert stack.key not in json.dumps(seen)  # never the client's key
    # the codec reads the answer, so it must come uncompressed whatever the client accepts
    assert "accept-encoding" not in headers and headers["content-type"] == "application/json"
    assert "accept" not in headers  # what the Ollama client accepts says nothing of the provider's answer
    sent = json.loads(seen["body"])
    assert sent["max_tokens"] == 5 and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    final = parts[-1]
    assert all(p.model == CHAT for p in parts) and final.done and final.done_reason == "length"
    assert not any(p.done for p in parts[:-1]) and "".join(p.message.content for p in parts)
    counted = provider_usage(stack.provider, seen)
    assert (final.prompt_eval_count, final.eval_count) == (
        counted["prompt_tokens"],
        counted["completion_tokens"],
    )
    row = stack.fortress.usage({"chat-image"}, ROW)["chat-image"]
    assert row == (CHAT, "prov", 200, 1, final.prompt_eval_count, final.eval_count)


def test_chat_with_tools_both_ways_stream_and_not(stack: Stack) -> None:
    c = client(stack)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    whole = c.chat(model=CHAT, messages=ask, tools=[WEATHER])
    (call,) = whole.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == CITY
    assert whole.done_reason == "stop" and whole.model == CHAT and whole.eval_count
    streamed = list(c.chat(model=CHAT, messages=ask, tools=[WEATHER], stream=True))
    calls = [p.message.tool_calls for p in streamed if p.message.tool_calls]
    assert calls == [whole.message.tool_calls] and streamed[-1].done
    # the answer goes back the Ollama way (by tool name); the provider insists on OpenAI's pairing
    history = [
        *ask,
        whole.message.model_dump(exclude_none=True),
        {"role": "tool", "content": "21 C", "tool_name": "get_weather"},
    ]
    answer = c.chat(model=CHAT, messages=history, tools=[WEATHER])
    assert answer.message.content and not answer.message.tool_calls


def test_generate_stream_and_not_and_embeddings(stack: Stack) -> None:
    c = client(stack)
    whole = c.generate(model=CHAT, prompt="hello", system="be brief")
    parts = list(c.generate(model=CHAT, prompt="hello", system="be brief", stream=True))
    assert whole.done and whole.model == CHAT and whole.eval_count == 12
    assert "".join(p.response for p in parts) == whole.response and parts[-1].eval_count == 12
    assert parts[-1].prompt_eval_count == whole.prompt_eval_count > 0
    embedded = client(stack, "embed-two").embed(model=EMBED, input=["a", "bb"])
    assert embedded.model == EMBED and len(embedded.embeddings) == 2 and embedded.prompt_eval_count == 2
    legacy = c.embeddings(model=EMBED, prompt="a")
    assert legacy.embedding == embedded.embeddings[0]
    assert stack.fortress.usage({"embed-two"}, ROW)["embed-two"] == (EMBED, "prov", 200, 0, 2, 0)


def test_loads_unloads_and_empty_inputs_are_answered_without_the_provider(stack: Stack) -> None:
    c = client(stack)
    stack.clear()
    assert c.chat(model=CHAT, messages=[]).done_reason == "load"
    assert client(stack, "unload").generate(model=CHAT, keep_alive=0).done_reason == "unload"
    assert c.embed(model=EMBED, input=[]).embeddings == []
    assert stack.seen() == []
    assert stack.fortress.usage({"unload"}, ROW)["unload"] == (CHAT, "prov", 200, 0, None, None)


def test_provider_errors_come_back_in_ollama_s_shape(stack: Stack) -> None:
    c = client(stack)
    with pytest.raises(ollama.ResponseError) as missing:
        c.chat(model="prov/gpt-9", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404 and "gpt-9" in missing.value.error
    with pytest.raises(ollama.ResponseError) as refused:
        c.generate(model="stale/gpt-4o-mini", prompt="x")
    assert refused.value.status_code == 502  # the gateway's credential, not the client's problem
    assert "credential" in refused.value.error and "sk-not" not in refused.value.error
    stack.clear()
    bad = httpx.post(
        f"{stack.fortress.url}/api/chat",
        json={"model": CHAT, "messages": [{"role": "user", "content": "x"}], "format": "yaml"},
        headers=stack.auth,
    )
    assert bad.status_code == 400 and bad.json()["error"].startswith("invalid format")
    admin = {"Authorization": f"Bearer {stack.fortress.key('root', '--scope', 'admin')}"}
    delete = httpx.request("DELETE", f"{stack.fortress.url}/api/delete", json={"model": CHAT}, headers=admin)
    assert delete.status_code == 400 and "OpenAI-compatible provider prov" in delete.json()["error"]
    assert stack.seen() == []  # refused before anything reached the provider


def test_a_provider_dying_mid_stream_ends_the_ollama_stream_with_one_error_line(stack: Stack) -> None:
    body = {"model": CHAT, "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=stack.fortress.url, headers=stack.auth) as http:
        cut = http.post("/api/chat", json=body, headers={"X-Sim-Die-After": "4"})
        lines = [json.loads(line) for line in cut.text.splitlines()]
        assert cut.status_code == 200 and "error" in lines[-1] and len(lines) >= 2
        assert all("error" not in line and not line["done"] for line in lines[:-1])
        again = http.post("/api/chat", json={**body, "stream": False})  # the same connection, reused
        assert again.status_code == 200 and again.json()["done"]
