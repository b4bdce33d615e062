"""Provider /embeddings answers -> Ollama's /api/embed and legacy /api/embeddings shapes."""

from __future__ import annotations

import base64
import json
import struct

import ollama

from fortress.translate import EmbedCodec
from tests.translate.conftest import JSON_HEADERS, ticking

ANSWER = {
    "object": "list",
    "data": [
        {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
        {"object": "embedding", "index": 0, "embedding": [0.6, -0.8]},
    ],
    "model": "text-embedding-3-small",
    "usage": {"prompt_tokens": 6, "total_tokens": 6},
}


def run(
    answer: bytes, *, legacy: bool = False, status: int = 200
) -> tuple[EmbedCodec, tuple[int, bytes], bytes]:
    codec = EmbedCodec("prov/emb", legacy=legacy, clock=ticking(2_000))
    head = codec.head(status, JSON_HEADERS)
    return codec, head, codec.feed(answer[:7]) + codec.feed(answer[7:]) + codec.end()


def test_embed_golden_in_index_order() -> None:
    codec, head, out = run(json.dumps(ANSWER).encode())
    assert head == (200, b"application/json; charset=utf-8")
    assert json.loads(out) == {
        "model": "prov/emb",
        "embeddings": [[0.6, -0.8], [0.0, 1.0]],
        "total_duration": 2_000,
        "load_duration": 0,
        "prompt_eval_count": 6,
    }
    assert (codec.prompt_tokens, codec.completion_tokens) == (6, 0)
    ollama.EmbedResponse.model_validate_json(out)


def test_legacy_embeddings_and_base64_vectors() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()
    answer = {"data": [{"index": 0, "embedding": packed}], "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    _, _, out = run(json.dumps(answer).encode(), legacy=True)
    assert json.loads(out) == {"embedding": [0.5, -0.25]}
    ollama.EmbeddingsResponse.model_validate_json(out)


def test_errors() -> None:
    _, head, out = run(b'{"error":{"message":"input too long"}}', status=400)
    assert head[0] == 400 and json.loads(out) == {"error": "input too long"}
    _, head, out = run(b'{"data": "nope"}')
    assert json.loads(out) == {"error": "the provider's answer has no embeddings"}
    _, head, out = run(b'{"data": [{"index": 0, "embedding": "%%%"}]}')
    assert json.loads(out) == {"error": "the provider's answer holds an embedding that is not a vector"}
    codec = EmbedCodec("prov/emb", legacy=False, clock=ticking())
    codec.head(200, JSON_HEADERS)
    codec.feed(b'{"data": [')
    assert json.loads(codec.cut("backend connection lost")) == {"error": "backend connection lost"}
    assert codec.end() == b""
