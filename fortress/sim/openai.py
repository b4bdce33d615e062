"""OpenAI-compatible routes under /v1: chat and text completions (JSON or SSE), embeddings, models.

Two flavours. By default the routes answer as Ollama's compatibility layer does (an Ollama backend).
With `--provider` they answer as OpenAI itself does (a provider backend): a role-only first chunk,
`"usage": null` on every chunk when usage is asked for, tool-call arguments streamed in fragments,
OpenAI's ids, usage details and wording. In both, a model given tools calls them (unless the last
message is a tool result) and one asked for `response_format` JSON answers JSON (see structured.py).
"""

from __future__ import annotations

import base64
import random
import string
import struct
import time
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING

from fortress.sim import gojson, messages, structured, text
from fortress.sim.catalog import Model
from fortress.sim.embeddings import find_embedder, inputs
from fortress.sim.generation import find_model
from fortress.sim.gotime import DEFAULT_KEEP_ALIVE_S
from fortress.sim.journal import note
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
CHAT_FIELDS = {
    **_SAMPLING,
    "messages": "[]openai.Message",
    "tools": "[]api.Tool",
    "response_format": "*openai.ResponseFormat",
}
COMPLETION_FIELDS = {**_SAMPLING, "prompt": "json.RawMessage", "suffix": "string"}
EMBEDDING_FIELDS = {"model": "string", "input": "json.RawMessage", "encoding_format": "string"}
DONE = b"data: [DONE]\n\n"
FINGERPRINT = "fp_sim"
_ALPHANUMERIC = string.ascii_letters + string.digits


def _event(value: object) -> bytes:
    return b"data: " + dumps(value) + b"\n\n"


def _sse(prefix: bytes, suffix: bytes, plan: Plan, tail: list[bytes]) -> Iterator[bytes]:
    for piece in plan.pieces():
        yield b"".join((prefix, piece, suffix))
    yield from tail


def _random_id(prefix: str, length: int) -> str:
    return prefix + "".join(random.choices(_ALPHANUMERIC, k=length))


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and bool(options.get("include_usage"))


def _find(sim: Simulator, name: object, verb: str) -> Model:
    """The model, or the 404 in the imitated server's words."""
    try:
        return find_model(sim, name, "completion", verb)
    except Refusal as refused:
        if sim.settings.provider and refused.status == 404:
            raise Refusal(
                404, f"The model `{name}` does not exist or you do not have access to it."
            ) from None
        raise


def _plan(sim: Simulator, req: Request, body: dict, prompt_tokens: int, verb: str) -> Plan:
    model = _find(sim, body.get("model"), verb)
    was_loaded = sim.catalog.touch(model, DEFAULT_KEEP_ALIVE_S)
    limit = body.get("max_tokens", body.get("max_completion_tokens"))
    return Plan.make(req.knobs, limit, prompt_tokens, was_loaded)


def _usage(prompt_tokens: int, completion_tokens: int, provider: bool) -> dict:
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if provider:
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        }
    return usage


def _head(body: dict, kind: str, provider: bool) -> dict:
    """The fields every chunk (or the whole answer) starts with."""
    if provider:
        prefix = "chatcmpl-" if kind.startswith("chat") else "cmpl-"
        head = {
            "id": _random_id(prefix, 24),
            "object": kind,
            "created": int(time.time()),
            "model": body["model"],
        }
        if kind.startswith("chat"):
            head["service_tier"] = "default"
        head["system_fingerprint"] = FINGERPRINT
        return head
    prefix = "chatcmpl-" if kind.startswith("chat") else "cmpl-"
    return {
        "id": f"{prefix}{random.randrange(999)}",
        "object": kind,
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_ollama",
    }


class Chunks:
    """Builds the SSE events of one chat stream: each delta, the finish chunk, usage, [DONE]."""

    def __init__(self, head: dict, provider: bool, usage: bool) -> None:
        self.head = {**head, "object": "chat.completion.chunk"}
        self.provider = provider
        self.usage = usage

    def chunk(self, delta: dict, finish: str | None = None) -> bytes:
        choice: dict = {"index": 0, "delta": delta}
        if self.provider:
            choice["logprobs"] = None
        choice["finish_reason"] = finish
        chunk = {**self.head, "choices": [choice]}
        if self.usage and self.provider:
            chunk["usage"] = None  # OpenAI marks every chunk but the last when usage is asked for
        return _event(chunk)

    def tail(self, finish: str, usage: dict) -> list[bytes]:
        events = [self.chunk({}, finish)]
        if self.usage:
            events.append(_event({**self.head, "choices": [], "usage": usage}))
        events.append(DONE)
        return events

    def stream(self, deltas: Iterable[dict], finish: str, usage: dict, plan: Plan) -> Stream:
        body = chain((self.chunk(delta) for delta in deltas), self.tail(finish, usage))
        return Stream(SSE, body, plan.interval_s)


def chat_completions(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "openai.ChatCompletionRequest", CHAT_FIELDS)
    note(req.entry, body.get("model"))
    provider = sim.settings.provider
    history = body.get("messages") or []
    if not history:
        raise Refusal(400, "[] is too short - 'messages'")
    said = messages.read(history, provider)
    prompt_tokens = (
        text.count_tokens(said.text)
        + 4 * len(history)
        + text.TEMPLATE_OVERHEAD
        + messages.IMAGE_TOKENS * said.images
    )
    plan = _plan(sim, req, body, prompt_tokens, "chat")
    head = _head(body, "chat.completion", provider)
    tools = body.get("tools")
    if tools and said.last_role != "tool":
        calls = structured.chosen_tools(tools, body.get("tool_choice"), body.get("parallel_tool_calls"))
        if calls:
            return _tool_calls(body, head, calls, plan, provider)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        return _json_answer(body, head, response_format, plan, provider)
    if not body.get("stream"):
        message = _message(text.plain_text(plan.count), provider)
        usage = _usage(plan.prompt_tokens, plan.count, provider)
        return _answer(head, message, plan.done_reason, usage, plan, provider)
    chunks = Chunks(head, provider, _include_usage(body))
    tail = chunks.tail(plan.done_reason, _usage(plan.prompt_tokens, plan.count, provider))
    if provider:  # a role-only first chunk, then bare content deltas
        prefix = b"data: " + dumps(chunks.head)[:-1] + b',"choices":[{"index":0,"delta":{"content":"'
        suffix = b'"},"logprobs":null,"finish_reason":null}]' + (b',"usage":null}' if chunks.usage else b"}")
        first = chunks.chunk({"role": "assistant", "content": "", "refusal": None})
        return Stream(SSE, chain((first,), _sse(prefix, suffix + b"\n\n", plan, tail)), plan.interval_s)
    prefix = (
        b"data: "
        + dumps(chunks.head)[:-1]
        + b',"choices":[{"index":0,"delta":{"role":"assistant","content":"'
    )
    return Stream(SSE, _sse(prefix, b'"},"finish_reason":null}]}\n\n', plan, tail), plan.interval_s)


def _answer(head: dict, message: dict, finish: str, usage: dict, plan: Plan, provider: bool) -> Full:
    """A whole (non-streamed) chat completion."""
    logprobs = {"logprobs": None} if provider else {}
    choice = {"index": 0, "message": message, **logprobs, "finish_reason": finish}
    return Full(200, dumps({**head, "choices": [choice], "usage": usage}), delay_s=plan.generation_s)


def _message(content: str | None, provider: bool, **extra: object) -> dict:
    if provider:
        return {"role": "assistant", "content": content, **extra, "refusal": None, "annotations": []}
    return {"role": "assistant", "content": content or "", **extra}


def _tool_calls(body: dict, head: dict, functions: list[dict], plan: Plan, provider: bool) -> Reply:
    """The model calls each chosen function; arguments come from its parameters' schema.

    OpenAI streams a call's id and name, then its arguments in fragments (one token each); Ollama
    sends each call whole. `max_tokens` cuts the arguments short, as it would a real model's.
    """
    budget = plan.count if plan.done_reason == "length" else None
    calls, tokens, finish = [], 0, "tool_calls"
    for function in functions:
        left = None if budget is None else budget - tokens
        if left is not None and left <= 0:
            break
        pieces, cut = structured.fragments(structured.dumps(structured.arguments(function)), left)
        calls.append((structured.call_id(provider), function.get("name", ""), pieces))
        tokens += len(pieces)
        if cut:
            finish = "length"
    usage = _usage(plan.prompt_tokens, tokens, provider)
    whole = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": "".join(pieces)}}
        for call_id, name, pieces in calls
    ]
    if not body.get("stream"):
        return _answer(head, _message(None, provider, tool_calls=whole), finish, usage, plan, provider)
    chunks = Chunks(head, provider, _include_usage(body))
    if not provider:
        indexed = [{"id": c["id"], "index": i, **c} for i, c in enumerate(whole)]
        return chunks.stream(
            [{"role": "assistant", "content": "", "tool_calls": indexed}], finish, usage, plan
        )
    deltas: list[dict] = []
    for index, (call_id, name, pieces) in enumerate(calls):
        opening = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        first = {"tool_calls": [opening]}
        deltas.append(
            {"role": "assistant", "content": None, **first, "refusal": None} if index == 0 else first
        )
        deltas += ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]} for piece in pieces)
    return chunks.stream(deltas, finish, usage, plan)


def _json_answer(body: dict, head: dict, response_format: dict, plan: Plan, provider: bool) -> Reply:
    """JSON text for `response_format`: an example of the schema, or an object holding the answer."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    value = structured.example(schema) if schema else {"answer": text.plain_text(plan.count)}
    limit = plan.count if plan.done_reason == "length" else None
    pieces, cut = structured.fragments(structured.dumps(value), limit)
    finish = "length" if cut else "stop"
    usage = _usage(plan.prompt_tokens, len(pieces), provider)
    if not body.get("stream"):
        return _answer(head, _message("".join(pieces), provider), finish, usage, plan, provider)
    chunks = Chunks(head, provider, _include_usage(body))
    if provider:
        deltas = chain(
            ({"role": "assistant", "content": "", "refusal": None},), ({"content": p} for p in pieces)
        )
    else:
        deltas = ({"role": "assistant", "content": p} for p in pieces)
    return chunks.stream(deltas, finish, usage, plan)


def completions(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "openai.CompletionRequest", COMPLETION_FIELDS)
    note(req.entry, body.get("model"))
    provider = sim.settings.provider
    prompt = body.get("prompt")
    if provider and isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        prompt = "".join(prompt)
    if not isinstance(prompt, str):
        raise Refusal(400, "invalid type for 'prompt' field")
    plan = _plan(sim, req, body, text.count_tokens(prompt) + text.TEMPLATE_OVERHEAD, "generate")
    head = _head(body, "text_completion", provider)
    usage = _usage(plan.prompt_tokens, plan.count, provider)
    logprobs = b'"logprobs":null,' if provider else b""
    if not body.get("stream"):
        choice = {"text": text.plain_text(plan.count), "index": 0, **({"logprobs": None} if provider else {})}
        choice["finish_reason"] = plan.done_reason
        return Full(200, dumps({**head, "choices": [choice], "usage": usage}), delay_s=plan.generation_s)
    asked = _include_usage(body)
    if provider:  # OpenAI: "usage": null on every chunk but the last
        marker = {"usage": None} if asked else {}
    else:  # Ollama: a zeroed usage on every chunk
        marker = {"usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}} if asked else {}
    suffix = (
        b'","index":0,'
        + logprobs
        + b'"finish_reason":null}]'
        + (b"," + dumps(marker)[1:-1] if marker else b"")
    )
    prefix = b"data: " + dumps(head)[:-1] + b',"choices":[{"text":"'
    finish = {
        "text": "",
        "index": 0,
        **({"logprobs": None} if provider else {}),
        "finish_reason": plan.done_reason,
    }
    tail = [_event({**head, "choices": [finish], **marker})]
    if asked:
        tail.append(_event({**head, "choices": [], "usage": usage}))
    tail.append(DONE)
    return Stream(SSE, _sse(prefix, suffix + b"}\n\n", plan, tail), plan.interval_s)


def embeddings(sim: Simulator, req: Request) -> Full:
    body = gojson.decode_struct(req.body, "openai.EmbedRequest", EMBEDDING_FIELDS)
    note(req.entry, body.get("model"))
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


def _provider_entry(model: Model) -> dict:
    """A provider lists bare ids (no `:latest` tag) owned by itself."""
    return {**model.openai_entry(), "id": model.name.removesuffix(":latest"), "owned_by": "fortress-sim"}


def models(sim: Simulator, req: Request) -> Full:
    if sim.settings.provider:
        entries = [_provider_entry(m) for m in sim.catalog.installed.values()]
        return Full(200, dumps({"object": "list", "data": entries}))
    return Full(200, sim.catalog.openai_models_body())


def model(sim: Simulator, req: Request) -> Full:
    found = sim.catalog.find(req.param)
    if found is None:
        if sim.settings.provider:
            raise Refusal(404, f"The model '{req.param}' does not exist")
        raise Refusal(404, f"model '{req.param}' not found")
    entry = _provider_entry(found) if sim.settings.provider else found.openai_entry()
    return Full(200, dumps({**entry, "id": req.param}))


RESPONSES_FIELDS = {
    "model": "string",
    "input": "json.RawMessage",
    "instructions": "string",
    "stream": "bool",
    "max_output_tokens": "*int",
    "temperature": "*float64",
    "top_p": "*float64",
}


def responses(sim: Simulator, req: Request) -> Reply:
    """POST /v1/responses, text in and out (Ollama serves it too, in the same shape): one `response`
    object, or its SSE events (created, one output_text.delta per piece, completed with usage)."""
    body = gojson.decode_struct(req.body, "openai.ResponsesRequest", RESPONSES_FIELDS)
    note(req.entry, body.get("model"))
    given = body.get("input")
    if not isinstance(given, str | list) or not given:
        raise Refusal(400, "missing or invalid 'input'")
    prompt = given if isinstance(given, str) else dumps(given).decode()
    model = _find(sim, body.get("model"), "chat")
    was_loaded = sim.catalog.touch(model, DEFAULT_KEEP_ALIVE_S)
    prompt_tokens = text.count_tokens(prompt + str(body.get("instructions") or "")) + text.TEMPLATE_OVERHEAD
    plan = Plan.make(req.knobs, body.get("max_output_tokens"), prompt_tokens, was_loaded)
    rid, mid = _random_id("resp_", 24), _random_id("msg_", 24)
    usage = {
        "input_tokens": plan.prompt_tokens,
        "output_tokens": plan.count,
        "total_tokens": plan.prompt_tokens + plan.count,
    }

    def response(status: str, output: list[dict], used: dict | None) -> dict:
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "model": body["model"],
            "output": output,
            "usage": used,
        }

    words = text.plain_text(plan.count)
    part = {"type": "output_text", "text": words, "annotations": []}
    done = [{"type": "message", "id": mid, "status": "completed", "role": "assistant", "content": [part]}]
    if not body.get("stream"):
        return Full(200, dumps(response("completed", done, usage)), delay_s=plan.generation_s)

    def event(kind: str, value: dict) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + dumps({"type": kind, **value}) + b"\n\n"

    first = event("response.created", {"response": response("in_progress", [], None)})
    prefix = (
        b"event: response.output_text.delta\ndata: "
        + dumps({"type": "response.output_text.delta", "item_id": mid, "output_index": 0})[:-1]
        + b',"content_index":0,"delta":"'
    )
    tail = [event("response.completed", {"response": response("completed", done, usage)})]
    return Stream(SSE, chain((first,), _sse(prefix, b'"}\n\n', plan, tail)), plan.interval_s)
