"""POST /api/embed and the legacy /api/embeddings: deterministic, L2-normalised vectors."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from fortress.sim import gojson, text
from fortress.sim.catalog import Model
from fortress.sim.generation import keep_alive
from fortress.sim.plan import COLD_LOAD_NS, PROMPT_TOKEN_NS, WARM_LOAD_NS
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import Full, dumps

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

EMBED_FIELDS = {
    "model": "string",
    "input": "json.RawMessage",
    "truncate": "*bool",
    "dimensions": "int",
    "keep_alive": "*api.Duration",
    "options": "map[string]interface {}",
}
EMBEDDING_FIELDS = {
    "model": "string",
    "prompt": "string",
    "keep_alive": "*api.Duration",
    "options": "map[string]interface {}",
}


def inputs(value: object) -> list[str]:
    """Ollama accepts a string or a list of strings; anything else is a 400."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise Refusal(400, "invalid input type")


def find_embedder(sim: Simulator, name: object) -> Model:
    model = sim.catalog.find(name) if isinstance(name, str) else None
    if model is None:
        raise Refusal(404, f"model '{name or ''}' not found")
    return model


def dimensions_of(model: Model, requested: object) -> int:
    """The model's embedding length, or fewer when `dimensions` asks (Ollama truncates then renormalises)."""
    size = model.preset.embedding_length
    if requested is None or requested == 0:
        return size
    if not isinstance(requested, int) or not 0 < requested <= size:
        raise Refusal(400, f"dimensions must be between 1 and {size}")
    return requested


def vector_json(sample: str, dimensions: int, size: int) -> bytes:
    """The JSON array for one input: a prefix of the full vector, renormalised when truncated."""
    if dimensions == size:
        return text.embedding_json(sample, size)
    head = text.embedding(sample, size)[:dimensions]
    norm = math.sqrt(sum(v * v for v in head)) or 1.0
    return dumps([round(v / norm, 8) for v in head])


def embed(sim: Simulator, req: Request) -> Full:
    started = time.perf_counter()
    body = gojson.decode_struct(req.body, "api.EmbedRequest", EMBED_FIELDS)
    model = find_embedder(sim, body.get("model"))
    samples = inputs(body.get("input"))
    dimensions = dimensions_of(model, body.get("dimensions"))
    was_loaded = sim.catalog.touch(model, keep_alive(body))
    tokens = sum(text.count_tokens(s) for s in samples)
    vectors = b",".join(vector_json(s, dimensions, model.preset.embedding_length) for s in samples)
    load_ns = WARM_LOAD_NS if was_loaded else COLD_LOAD_NS
    total_ns = load_ns + tokens * PROMPT_TOKEN_NS + int((time.perf_counter() - started) * 1e9)
    tail = {"total_duration": total_ns, "load_duration": load_ns, "prompt_eval_count": tokens}
    head = dumps({"model": body.get("model")})[:-1]
    return Full(200, b"".join((head, b',"embeddings":[', vectors, b"],", dumps(tail)[1:])))


def embeddings(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "api.EmbeddingRequest", EMBEDDING_FIELDS)
    model = find_embedder(sim, body.get("model"))
    sim.catalog.touch(model, keep_alive(body))
    prompt = body.get("prompt") or ""
    vector = text.embedding_json(prompt, model.preset.embedding_length) if prompt else b"[]"
    return Full(200, b'{"embedding":' + vector + b"}")
