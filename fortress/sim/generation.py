"""POST /api/generate and /api/chat: NDJSON token streams, one-object replies, load/unload requests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from fortress.sim import gojson, names, text
from fortress.sim.catalog import Model
from fortress.sim.gotime import DurationError, keep_alive_seconds, rfc3339nano
from fortress.sim.plan import Plan
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import NDJSON, Full, Reply, Stream, dumps

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

GENERATE_FIELDS = {
    "model": "string",
    "prompt": "string",
    "suffix": "string",
    "system": "string",
    "template": "string",
    "context": "[]int",
    "stream": "*bool",
    "raw": "bool",
    "images": "[]api.ImageData",
    "options": "map[string]interface {}",
    "keep_alive": "*api.Duration",
    "think": "json.RawMessage",
}
CHAT_FIELDS = {
    "model": "string",
    "messages": "[]api.Message",
    "tools": "[]api.Tool",
    "stream": "*bool",
    "options": "map[string]interface {}",
    "keep_alive": "*api.Duration",
    "think": "json.RawMessage",
}
_THINK_LEVELS = (True, False, "low", "medium", "high", "max")


def find_model(sim: Simulator, name: object, capability: str, verb: str) -> Model:
    """The installed model, or Ollama's 404 / capability 400."""
    model = sim.catalog.find(name) if isinstance(name, str) else None
    if model is None:
        raise Refusal(404, f"model '{name or ''}' not found")
    if capability not in model.capabilities:
        raise Refusal(400, f'"{name}" does not support {verb}')
    return model


def keep_alive(body: dict) -> float:
    try:
        return keep_alive_seconds(body.get("keep_alive"))
    except DurationError as error:
        raise Refusal(400, str(error)) from None


def check_think(body: dict, model: Model) -> None:
    """Ollama refuses unknown think values, and think on models without the thinking capability."""
    think = body.get("think")
    if think is None:
        return
    if think not in _THINK_LEVELS:
        raise Refusal(400, f"invalid think value: {dumps(think).decode()}")
    if think is not False and "thinking" not in model.capabilities:
        raise Refusal(400, f'"{body["model"]}" does not support thinking')


def _num_predict(body: dict) -> object:
    options = body.get("options") or {}
    return options.get("num_predict")


def _chunks(prefix: bytes, suffix: bytes, plan: Plan, final: dict, started: float) -> Iterator[bytes]:
    """Token lines, then the final object with metrics measured when it is produced."""
    for piece in plan.pieces():
        yield b"".join((prefix, piece, suffix))
    final.update(plan.metrics(started))
    yield dumps(final) + b"\n"


# Around the escaped text of a stream line, after the head: (opening, closing) per route.
GENERATE_LINE = (b',"response":"', b'","done":false}\n')
CHAT_LINE = (b',"message":{"role":"assistant","content":"', b'"},"done":false}\n')


def _complete(
    plan: Plan, head: dict, stream: bool, line: tuple[bytes, bytes], closing: Callable[[str], dict]
) -> Reply:
    """A stream (Ollama's default) or one object; `closing(text)` gives the fields after the head."""
    started = time.perf_counter()
    if stream:
        prefix = dumps(head)[:-1] + line[0]
        final = {**head, **closing("")}
        return Stream(NDJSON, _chunks(prefix, line[1], plan, final, started), plan.interval_s)
    body = {**head, **closing(text.plain_text(plan.count))}
    body.update(plan.metrics(started - plan.generation_s))
    return Full(200, dumps(body), delay_s=plan.generation_s)


def _message(content: str) -> dict:
    return {"role": "assistant", "content": content}


def _load_reply(sim: Simulator, model: Model, head: dict, seconds: float, empty: dict) -> Full:
    """An empty prompt (or message list) only loads or unloads the model."""
    sim.catalog.touch(model, seconds)
    reason = "unload" if seconds <= 0 else "load"
    return Full(200, dumps({**head, **empty, "done": True, "done_reason": reason}))


def generate(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "api.GenerateRequest", GENERATE_FIELDS)
    name = body.get("model")
    model = find_model(sim, name, "completion", "generate")
    check_think(body, model)
    if body.get("raw") and (body.get("template") or body.get("system") or body.get("context")):
        raise Refusal(400, "raw mode does not support template, system, or context")
    seconds = keep_alive(body)
    head = {"model": name, "created_at": rfc3339nano(time.time())}
    prompt = body.get("prompt") or ""
    if not prompt and not body.get("images"):
        return _load_reply(sim, model, head, seconds, {"response": ""})
    was_loaded = sim.catalog.touch(model, seconds)
    prompt_tokens = text.count_tokens(prompt + (body.get("system") or "")) + text.TEMPLATE_OVERHEAD
    plan = Plan.make(req.knobs, _num_predict(body), prompt_tokens, was_loaded)
    context = None if body.get("raw") else list(range(1, prompt_tokens + plan.count + 1))

    def closing(content: str) -> dict:
        fields = {"response": content, "done": True, "done_reason": plan.done_reason}
        return fields if context is None else {**fields, "context": context}

    return _complete(plan, head, body.get("stream") is not False, GENERATE_LINE, closing)


def chat(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "api.ChatRequest", CHAT_FIELDS)
    name = body.get("model")
    model = find_model(sim, name, "completion", "chat")
    check_think(body, model)
    if body.get("tools") and "tools" not in model.capabilities:
        raise Refusal(400, f"{names.full_name(model.name)} does not support tools")
    seconds = keep_alive(body)
    head = {"model": name, "created_at": rfc3339nano(time.time())}
    messages = body.get("messages") or []
    if not messages:
        return _load_reply(sim, model, head, seconds, {"message": _message("")})
    was_loaded = sim.catalog.touch(model, seconds)
    said = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
    prompt_tokens = text.count_tokens(said) + 4 * len(messages) + text.TEMPLATE_OVERHEAD
    plan = Plan.make(req.knobs, _num_predict(body), prompt_tokens, was_loaded)

    def closing(content: str) -> dict:
        return {"message": _message(content), "done": True, "done_reason": plan.done_reason}

    return _complete(plan, head, body.get("stream") is not False, CHAT_LINE, closing)
