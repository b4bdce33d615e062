"""Issue 2 acceptance: the official ollama and openai clients work through the proxy, unchanged."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from tests.conftest import Fortress, Sim


@pytest.fixture
def key(fortress: Fortress) -> str:
    return fortress.key("alice")


def client(fortress: Fortress, key: str) -> ollama.Client:
    return ollama.Client(host=fortress.url, headers={"Authorization": f"Bearer {key}"})


def test_ollama_client_list_show_generate_chat_embed(fortress: Fortress, key: str) -> None:
    c = client(fortress, key)
    names = [m.model for m in c.list().models]
    assert "llama3.2:latest" in names
    assert c.show("llama3.2").modelinfo is not None
    whole = c.generate(model="llama3.2", prompt="hello")
    assert whole.done and whole.response and whole.eval_count
    parts = list(c.generate(model="llama3.2", prompt="hello", stream=True))
    assert len(parts) > 2 and parts[-1].done and not parts[0].done
    assert "".join(p.response for p in parts) == whole.response
    chat = list(c.chat(model="llama3.2", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert chat[-1].done and chat[-1].done_reason in ("stop", "length")
    assert "".join(p.message.content or "" for p in chat)
    emb = c.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 8


def test_ollama_client_unknown_model_is_404(fortress: Fortress, key: str) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client(fortress, key).generate(model="no-such-model", prompt="x")
    assert err.value.status_code == 404
    assert "not found" in err.value.error


def test_openai_client_models_chat_embeddings(fortress: Fortress, key: str) -> None:
    c = openai.OpenAI(base_url=f"{fortress.url}/v1", api_key=key, max_retries=0)
    assert "llama3.2:latest" in [m.id for m in c.models.list()]
    done = c.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "hi"}])
    assert done.choices[0].message.content and done.usage and done.usage.completion_tokens > 0
    chunks = list(
        c.chat.completions.create(
            model="llama3.2",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == done.choices[0].message.content
    assert chunks[-1].usage is not None
    emb = c.embeddings.create(model="nomic-embed-text", input="hello")
    assert len(emb.data[0].embedding) > 8


def test_openai_client_bad_key_is_authentication_error(fortress: Fortress) -> None:
    c = openai.OpenAI(base_url=f"{fortress.url}/v1", api_key="fk_nothere1_" + "x" * 40, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        c.models.list()
    body = err.value.body
    assert isinstance(body, dict) and body.get("type") == "authentication_error"
    assert "invalid API key" in body["message"]


def test_stream_equals_direct_line_for_line(fortress: Fortress, key: str, sim: Sim) -> None:
    body = {"model": "llama3.2", "prompt": "tell me", "options": {"seed": 7}}
    headers = {"X-Sim-Tokens": "40"}
    direct = httpx.post(f"{sim.url}/api/generate", json=body, headers=headers).text.splitlines()
    proxied = httpx.post(
        f"{fortress.url}/api/generate", json=body, headers={**headers, "Authorization": f"Bearer {key}"}
    ).text.splitlines()
    assert len(direct) == len(proxied) > 10

    def stable(line: str) -> dict:  # timestamps and durations differ run to run
        obj = json.loads(line)
        return {k: v for k, v in obj.items() if k != "created_at" and not k.endswith("duration")}

    assert [stable(x) for x in direct] == [stable(x) for x in proxied]


def test_first_chunk_arrives_while_backend_still_generating(fortress: Fortress, key: str) -> None:
    import time

    headers = {"Authorization": f"Bearer {key}", "X-Sim-Tokens": "20", "X-Sim-Rate": "10"}
    t0 = time.monotonic()
    with httpx.stream(
        "POST", f"{fortress.url}/api/generate", json={"model": "llama3.2", "prompt": "x"}, headers=headers
    ) as r:
        lines = r.iter_lines()
        first = json.loads(next(lines))
        first_at = time.monotonic() - t0
        rest = [json.loads(x) for x in lines if x]
        total = time.monotonic() - t0
    assert first["done"] is False
    assert rest[-1]["done"] is True
    assert total > 1.5  # 20 tokens at 10/s
    assert first_at < total / 3  # not buffered: the first token came long before the last
