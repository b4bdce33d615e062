"""The official `openai` client against the simulator's /v1 routes."""

from __future__ import annotations

import math

import openai
import pytest

from tests.conftest import Sim

MESSAGES = [{"role": "user", "content": "Say hi"}]


@pytest.fixture
def client(simulator: Sim) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{simulator.url}/v1", api_key="unused")


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert "llama3.2:latest" in ids and "nomic-embed-text:latest" in ids
    assert client.models.retrieve("llama3.2:latest").owned_by == "library"


def test_chat_non_stream_has_usage(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="llama3.2", messages=MESSAGES, max_tokens=4)
    assert reply.object == "chat.completion" and reply.system_fingerprint == "fp_ollama"
    assert reply.choices[0].message.content == "The quick brown fox"
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage and reply.usage.completion_tokens == 4
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 4


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="llama3.2", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("The quick brown fox")
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 12


def test_text_completion(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="qwen2.5:0.5b", prompt="Once", max_tokens=2)
    assert reply.object == "text_completion" and reply.choices[0].text == "The quick"


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    reply = client.embeddings.create(model="nomic-embed-text", input=["a", "b"])
    assert [d.index for d in reply.data] == [0, 1] and len(reply.data[0].embedding) == 768
    assert math.isclose(sum(v * v for v in reply.data[0].embedding), 1.0, rel_tol=1e-5)
    # Without encoding_format the client asks for base64 and decodes it; floats must agree.
    floats = client.embeddings.create(model="nomic-embed-text", input="a", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(reply.data[0].embedding, abs=1e-6)


def test_unknown_model_is_openai_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert caught.value.body == {
        "message": "model 'nope' not found",
        "type": "not_found_error",
        "param": None,
        "code": None,
    }


def test_empty_messages_is_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="too short"):
        client.chat.completions.create(model="llama3.2", messages=[])
