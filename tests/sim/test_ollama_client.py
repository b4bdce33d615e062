"""The official `ollama` Python client against the simulator: shapes it validates, errors it raises."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path

import ollama
import pytest

from tests.conftest import Sim


@pytest.fixture
def client(simulator: Sim) -> ollama.Client:
    return ollama.Client(host=simulator.url)


def test_list_shows_the_default_models(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert names == {"llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"}
    assert all(m.details and m.details.format == "gguf" and m.size for m in client.list().models)


def test_show_has_model_info_and_capabilities(client: ollama.Client) -> None:
    shown = client.show("llama3.2")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in (shown.capabilities or [])
    assert client.show("nomic-embed-text").capabilities == ["embedding"]


def test_generate_stream_ends_with_metrics(client: ollama.Client) -> None:
    parts = list(client.generate(model="llama3.2", prompt="Why is the sky blue?", stream=True))
    assert [p.done for p in parts] == [False] * 12 + [True]
    final = parts[-1]
    assert final.done_reason == "stop" and final.eval_count == 12 and final.context
    assert final.total_duration and final.prompt_eval_count and final.load_duration is not None
    assert "".join(p.response for p in parts).startswith("The quick brown fox")


def test_generate_non_stream_respects_num_predict(client: ollama.Client) -> None:
    reply = client.generate(model="llama3.2", prompt="hi", options={"num_predict": 3})
    assert reply.response == "The quick brown" and reply.done_reason == "length" and reply.eval_count == 3


def test_chat_stream(client: ollama.Client) -> None:
    parts = list(client.chat(model="qwen2.5:0.5b", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert "".join(p.message.content or "" for p in parts).endswith(" Café au")


def test_embed_is_normalised_and_deterministic(client: ollama.Client) -> None:
    first = client.embed(model="nomic-embed-text", input=["hello", "world"]).embeddings
    again = client.embed(model="nomic-embed-text", input="hello").embeddings
    assert len(first) == 2 and len(first[0]) == 768
    assert first[0] == again[0] and first[0] != first[1]
    assert math.isclose(sum(v * v for v in first[1]), 1.0, rel_tol=1e-5)


def test_unknown_model_raises_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="nope", prompt="hi")
    assert caught.value.status_code == 404 and caught.value.error == "model 'nope' not found"


def test_generate_on_embedding_model_is_refused(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="nomic-embed-text", prompt="hi")
    assert caught.value.status_code == 400 and "does not support generate" in caught.value.error


def test_keep_alive_loads_and_unloads(client: ollama.Client) -> None:
    client.generate(model="qwen2.5:0.5b", prompt="hi", keep_alive="10m")
    assert "qwen2.5:0.5b" in {m.model for m in client.ps().models}
    unloaded = client.generate(model="qwen2.5:0.5b", prompt="", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert "qwen2.5:0.5b" not in {m.model for m in client.ps().models}


def test_pull_copy_delete_round_trip(launch_sim: Callable[..., Sim]) -> None:
    client = ollama.Client(host=launch_sim("--models", "llama3.2").url)
    progress = list(client.pull("tinyllama", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert any(p.digest and p.total and p.completed == p.total for p in progress)
    assert "verifying sha256 digest" in statuses and "writing manifest" in statuses
    assert client.copy("tinyllama", "tiny-copy").status == "success"
    installed = {m.model for m in client.list().models}
    assert installed == {"llama3.2:latest", "tinyllama:latest", "tiny-copy:latest"}
    assert client.delete("tinyllama").status == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("tinyllama")
    assert caught.value.status_code == 404


def test_pull_of_missing_model_fails_mid_stream(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        list(client.pull("doesnotexist", stream=True))
    assert caught.value.status_code == -1 and "file does not exist" in caught.value.error
    with pytest.raises(ollama.ResponseError) as non_stream:
        client.pull("doesnotexist")
    assert non_stream.value.status_code == 500


def test_blob_then_create_from_files(launch_sim: Callable[..., Sim], tmp_path: Path) -> None:
    client = ollama.Client(host=launch_sim().url)
    data = b"GGUF" + bytes(range(256)) * 64
    (tmp_path / "m.gguf").write_bytes(data)
    digest = client.create_blob(tmp_path / "m.gguf")
    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    statuses = [p.status for p in client.create(model="mine", files={"m.gguf": digest}, stream=True)]
    assert statuses[0] == "parsing GGUF" and statuses[-1] == "success"
    assert "mine:latest" in {m.model for m in client.list().models}
