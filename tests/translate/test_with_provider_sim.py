"""The translation layer against a real provider (the simulator with --provider): request out, answer back.

Until the exchange wires the codecs in (phase 2), this drives them the way it will: the translated
body goes to the provider over real HTTP, the de-chunked body bytes are fed to the codec as they
arrive, and what comes out must satisfy the official `ollama` client's types with the provider's counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import ollama
import pytest

from fortress.translate import translate
from fortress.translate.requests import Translation
from tests.conftest import Sim
from tests.sim.conftest import launch
from tests.translate.conftest import CITY, PNG, WEATHER

KEY = "sk-translate-test"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    models = "gpt-4o-mini,text-embedding-3-small"
    running = launch(tmp_path_factory.mktemp("provider"), "--provider", "--api-key", KEY, "--models", models)
    yield running
    running.stop()


def exchange(
    provider: Sim, translation: Translation, headers: dict | None = None
) -> tuple[int, bytes, object]:
    """Send the translated request and relay the answer through its codec, read by read."""
    codec = translation.codec(time.time_ns)
    sent = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
    with httpx.stream(
        "POST", provider.url + "/v1" + translation.path, content=translation.body, headers=sent
    ) as r:
        status, _ = codec.head(r.status_code, [(k.encode(), v.encode()) for k, v in r.headers.items()])
        out = [codec.feed(piece) for piece in r.iter_raw(64)]
    return status, b"".join(out) + codec.end(), codec


def send(provider: Sim, path: str, body: dict, model: str = "gpt-4o-mini") -> tuple[int, bytes, object]:
    return exchange(provider, translate(path, body, "prov", model))


def test_chat_stream_with_image(provider: Sim) -> None:
    body = {
        "messages": [{"role": "user", "content": "What is it?", "images": [PNG]}],
        "options": {"num_predict": 5},
    }
    status, out, codec = send(provider, "/api/chat", body)
    replies = [ollama.ChatResponse.model_validate_json(line) for line in out.splitlines()]
    assert status == 200 and "".join(r.message.content or "" for r in replies) == "The quick brown fox jumps"
    final = replies[-1]
    assert final.done and final.done_reason == "length" and final.model == "prov/gpt-4o-mini"
    assert final.eval_count == codec.completion_tokens == 5  # the provider's usage
    assert (
        final.prompt_eval_count == codec.prompt_tokens and (codec.prompt_tokens or 0) > 85
    )  # the image counted
    assert (final.total_duration or 0) >= (final.eval_duration or 0) > 0


def test_chat_tool_call_round_trip(provider: Sim) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    _, out, _ = send(provider, "/api/chat", {"messages": ask, "tools": [WEATHER]})
    calls_line, final = (ollama.ChatResponse.model_validate_json(line) for line in out.splitlines())
    (call,) = calls_line.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == CITY
    assert final.done_reason == "stop"
    # The client answers the call the Ollama way (by tool name); the provider insists on the pairing.
    result = {"role": "tool", "content": "21 C", "tool_name": "get_weather"}
    history = [*ask, calls_line.message.model_dump(exclude_none=True), result]
    status, out, _ = send(provider, "/api/chat", {"messages": history, "tools": [WEATHER], "stream": False})
    answer = ollama.ChatResponse.model_validate_json(out)
    assert status == 200 and answer.message.content and not answer.message.tool_calls


def test_generate_with_format_schema_and_raw(provider: Sim) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    status, out, _ = send(provider, "/api/generate", {"prompt": "n?", "format": schema, "stream": False})
    answer = ollama.GenerateResponse.model_validate_json(out)
    assert status == 200 and json.loads(answer.response) == {"n": 42}
    raw = translate("/api/generate", {"prompt": "[INST]hi[/INST]", "raw": True}, "prov", "gpt-4o-mini")
    status, out, codec = exchange(provider, raw)
    lines = [ollama.GenerateResponse.model_validate_json(line) for line in out.splitlines()]
    assert (
        raw.path == "/completions"
        and lines[-1].done
        and lines[-1].eval_count == codec.completion_tokens == 12
    )


def test_embed_and_embeddings(provider: Sim) -> None:
    status, out, codec = send(provider, "/api/embed", {"input": ["a", "bb"]}, "text-embedding-3-small")
    embedded = ollama.EmbedResponse.model_validate_json(out)
    assert (
        status == 200
        and len(embedded.embeddings) == 2
        and embedded.prompt_eval_count == codec.prompt_tokens == 2
    )
    _, out, _ = send(provider, "/api/embeddings", {"prompt": "a"}, "text-embedding-3-small")
    assert ollama.EmbeddingsResponse.model_validate_json(out).embedding == embedded.embeddings[0]


def test_provider_errors_and_a_cut(provider: Sim) -> None:
    status, out, _ = send(provider, "/api/chat", {"messages": [{"role": "user", "content": "x"}]}, "gpt-9")
    assert status == 404 and "does not exist" in json.loads(out)["error"]
    failing = translate("/api/chat", {"messages": [{"role": "user", "content": "x"}]}, "prov", "gpt-4o-mini")
    status, out, _ = exchange(provider, failing, {"X-Sim-Fail": "503"})
    assert status == 503 and json.loads(out) == {"error": "simulated failure (fortress sim)"}
    codec = failing.codec(time.time_ns)
    headers = {"Authorization": f"Bearer {KEY}", "X-Sim-Die-After": "3"}
    with httpx.stream(
        "POST", f"{provider.url}/v1/chat/completions", content=failing.body, headers=headers
    ) as r:
        codec.head(r.status_code, list(r.headers.raw))
        out = b""
        with pytest.raises(httpx.RemoteProtocolError):
            for piece in r.iter_raw():
                out += codec.feed(piece)
    out += codec.cut("the provider closed the connection mid-stream")
    *content, last = out.splitlines()
    assert json.loads(last) == {"error": "the provider closed the connection mid-stream"}
    assert len(content) == 2 and all(not json.loads(line)["done"] for line in content)
