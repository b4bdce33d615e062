"""OpenAI-compatible routes under /v1: chat and text completions (JSON or SSE), embeddings, models."""

from __future__ import annotations

import base64
import random
import struct
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fortress.sim import gojson, text
from fortress.sim.embeddings import find_embedder, inputs
from fortress.sim.generation import find_model
from fortress.sim.gotime import DEFAULT_KEEP_ALIVE_S
from fortress.sim.plan import Plan
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import SSE, Full, Reply, Stream, dumps

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

_SAMPLING = {
    "model": "string",
    "stream": "bool",
    "stream_options": "*openai.StreamOptions",
    "max_tokens": "*int",
    "temperature": "*float64",
    "top_p": "*float64",
    "seed": "*int",
}
CHAT_FIELDS = {**_SAMPLING, "messages": "[]openai.Message", "tools": "[]api.Tool"}
COMPLETION_FIELDS = {**_SAMPLING, "prompt": "json.RawMessage", "suffix": "string"}
EMBEDDING_FIELDS = {"model": "string", "input": "json.RawMessage", "encoding_format": "string"}
DONE = b"data: [DONE]\n\n"


def _event(value: object) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def _sse(prefix: bytes, suffix: bytes, plan: Plan, tail: list[bytes]) -> Iterator[bytes]:
    for piece in plan.pieces():
        yield b"".join((prefix, piece, suffix))
    yield from tail


def _plan(sim: Simulator, req: Request, body: dict, prompt_tokens: int, verb: str) -> Plan:
    model = find_model(sim, body.get("model"), "completion", verb)
    was_loaded = sim.catalog.touch(model, DEFAULT_KEEP_ALIVE_S)
    return Plan.make(req.knobs, body.get("max_tokens"), prompt_tokens, was_loaded)


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def chat_completions(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "openai.ChatCompletionRequest", CHAT_FIELDS)
    messages = body.get("messages") or []
    if not messages:
        raise Refusal(400, "[] is too short - 'messages'")
    said = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    plan = _plan(sim, req, body, text.count_tokens(said) + 4 * len(messages) + text.TEMPLATE_OVERHEAD, "chat")
    head = {
        "id": f"chatcmpl-{random.randrange(999)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_ollama",
    }
    if not body.get("stream"):
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text.plain_text(plan.count)},
            "finish_reason": plan.done_reason,
        }
        reply = {**head, "choices": [choice], "usage": plan.usage()}
        return Full(200, dumps(reply), delay_s=plan.generation_s)
    head["object"] = "chat.completion.chunk"
    prefix = b"data: " + dumps(head)[:-1] + b',"choices":[{"index":0,"delta":{"role":"assistant","content":"'
    tail = [_event({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": plan.done_reason}]})]
    if _include_usage(body):
        tail.append(_event({**head, "choices": [], "usage": plan.usage()}))
    tail.append(DONE)
    return Stream(SSE, _sse(prefix, b'"},"finish_reason":null}]}\n\n', plan, tail), plan.interval_s)


def completions(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "openai.CompletionRequest", COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise Refusal(400, "invalid type for 'prompt' field")
    plan = _plan(sim, req, body, text.count_tokens(prompt) + text.TEMPLATE_OVERHEAD, "generate")
    head = {
        "id": f"cmpl-{random.randrange(999)}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_ollama",
    }
    if not body.get("stream"):
        choice = {"text": text.plain_text(plan.count), "index": 0, "finish_reason": plan.done_reason}
        reply = {**head, "choices": [choice], "usage": plan.usage()}
        return Full(200, dumps(reply), delay_s=plan.generation_s)
    usage = _include_usage(body)
    zero = {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}} if usage else {}
    # Ollama puts a zeroed usage on every chunk when include_usage is set.
    suffix = b'","index":0,"finish_reason":null}]' + (b"," + dumps(zero)[1:-1] if zero else b"") + b"}\n\n"
    prefix = b"data: " + dumps(head)[:-1] + b',"choices":[{"text":"'
    finish = {"text": "", "index": 0, "finish_reason": plan.done_reason}
    tail = [_event({**head, "choices": [finish], **zero})]
    if usage:
        tail.append(_event({**head, "choices": [], "usage": plan.usage()}))
    tail.append(DONE)
    return Stream(SSE, _sse(prefix, suffix, plan, tail), plan.interval_s)


def embeddings(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "openai.EmbedRequest", EMBEDDING_FIELDS)
    samples = inputs(body.get("input"))
    if not samples:
        raise Refusal(400, "invalid input")
    model = find_embedder(sim, body.get("model"))
    sim.catalog.touch(model, DEFAULT_KEEP_ALIVE_S)
    size = model.preset.embedding_length
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, sample in enumerate(samples):
        vector = text.embedding(sample, size)
        encoded = base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "embedding": encoded, "index": index})
    tokens = sum(text.count_tokens(s) for s in samples)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return Full(200, dumps({"object": "list", "data": data, "model": body.get("model"), "usage": usage}))


def models(sim: Simulator, req: Request) -> Full:
    return Full(200, sim.catalog.openai_models_body())


def model(sim: Simulator, req: Request) -> Full:
    found = sim.catalog.find(req.param)
    if found is None:
        raise Refusal(404, f"model '{req.param}' not found")
    return Full(200, dumps({**found.openai_entry(), "id": req.param}))
