"""POST /v1/messages: the Anthropic Messages API as Ollama serves it (non-stream JSON or SSE events).

Shapes follow Ollama's `anthropic` package: `msg_<24 hex>` ids, `stop_reason` end_turn / max_tokens /
tool_use, usage as input/output tokens, and the stream message_start -> content_block_start ->
content_block_delta... -> content_block_stop -> message_delta -> message_stop, each sent as
`event: <type>` + `data: <json>`. Errors use Anthropic's shape (wire.anthropic_error).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from fortress.sim import gojson, structured, text
from fortress.sim.generation import find_model
from fortress.sim.gotime import DEFAULT_KEEP_ALIVE_S
from fortress.sim.journal import note
from fortress.sim.plan import Plan
from fortress.sim.request import Refusal, Request
from fortress.sim.wire import SSE, Full, Reply, Stream, dumps

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

FIELDS = {
    "model": "string",
    "max_tokens": "int",
    "messages": "[]anthropic.MessageParam",
    "stream": "bool",
    "temperature": "*float64",
    "top_p": "*float64",
    "top_k": "*int",
    "stop_sequences": "[]string",
    "tools": "[]anthropic.Tool",
    "tool_choice": "*anthropic.ToolChoice",
}
_STOP = {"stop": "end_turn", "length": "max_tokens"}
_TEXT_DELTA = (
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
)


def _event(kind: str, value: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps(value) + b"\n\n"


def _blocks(content: object) -> list:
    """A message's content: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    raise Refusal(400, "invalid message content")


def _read(messages: list, system: object) -> tuple[int, bool]:
    """(characters of text, as Ollama estimates tokens from them; last message is a tool result?)"""
    size = len(system) if isinstance(system, str) else 0
    tool_result = False
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Refusal(400, "invalid message")
        size += len(message["role"])
        tool_result = False
        for block in _blocks(message.get("content")):
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                size += len(block.get("text") or "")
            elif kind == "image":
                _image(block.get("source"))
            elif kind == "tool_use":
                for field in ("id", "name"):
                    if not block.get(field):
                        raise Refusal(400, f"tool_use block missing required '{field}' field")
            elif kind == "tool_result":
                tool_result = True
                content = block.get("content")
                size += len(content) if isinstance(content, str) else 0
    return size, tool_result


def _image(source: object) -> None:
    if not isinstance(source, dict):
        raise Refusal(400, "invalid image source")
    if source.get("type") != "base64":
        raise Refusal(
            400, f"invalid image source type: {source.get('type')}. Only base64 images are supported."
        )
    try:
        base64.b64decode(source.get("data") or "", validate=True)
    except (binascii.Error, ValueError) as error:
        raise Refusal(400, f"invalid base64 image data: {error}") from None


def _chosen(body: dict) -> list[dict]:
    """The tools the model calls, as structured.chosen_tools sees OpenAI's tool_choice."""
    tools = body.get("tools") or []
    functions = [{"function": {"name": t.get("name"), "parameters": t.get("input_schema")}} for t in tools]
    choice = body.get("tool_choice") if isinstance(body.get("tool_choice"), dict) else {}
    kind = choice.get("type")
    wanted = "none" if kind == "none" else {"name": choice.get("name")} if kind == "tool" else None
    parallel = not choice.get("disable_parallel_tool_use", False)
    return structured.chosen_tools(functions, wanted, parallel)


def messages(sim: Simulator, req: Request) -> Reply:
    body = gojson.decode_struct(req.body, "anthropic.MessagesRequest", FIELDS)
    note(req.entry, body.get("model"))
    if not body.get("model"):
        raise Refusal(400, "model is required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] <= 0:
        raise Refusal(400, "max_tokens is required and must be positive")
    history = body.get("messages") or []
    if not history:
        raise Refusal(400, "messages is required")
    size, after_tool = _read(history, body.get("system"))
    model = find_model(sim, body["model"], "completion", "chat")
    was_loaded = sim.catalog.touch(model, DEFAULT_KEEP_ALIVE_S)
    plan = Plan.make(req.knobs, body["max_tokens"], max(size // 4, 1), was_loaded)
    message_id = f"msg_{secrets.token_hex(12)}"
    calls = [] if after_tool else _chosen(body)
    if calls:
        tool_uses = [_tool_use(function) for function in calls]
        output_tokens = sum(len(structured.fragments(structured.dumps(u["input"]))[0]) for u in tool_uses)
        stop, content = "tool_use", tool_uses
    else:
        output_tokens, stop = plan.count, _STOP[plan.done_reason]
        content = [{"type": "text", "text": text.plain_text(plan.count)}]
    usage = {"input_tokens": plan.prompt_tokens, "output_tokens": output_tokens}
    head = {"id": message_id, "type": "message", "role": "assistant", "model": body["model"]}
    if not body.get("stream"):
        reply = {**head, "content": content, "stop_reason": stop, "usage": usage}
        return Full(200, dumps(reply), delay_s=plan.generation_s)
    start = {
        "type": "message_start",
        "message": {**head, "content": [], "usage": {**usage, "output_tokens": 0}},
    }
    return Stream(SSE, _events(start, content if calls else [], plan, stop, usage), plan.interval_s)


def _tool_use(function: dict) -> dict:
    arguments = structured.arguments(function)
    return {"type": "tool_use", "id": structured.call_id(False), "name": function["name"], "input": arguments}


def _events(start: dict, tool_uses: list, plan: Plan, stop: str, usage: dict) -> Iterator[bytes]:
    yield _event("message_start", start)
    if tool_uses:
        for index, use in enumerate(tool_uses):
            opening = {**use, "input": {}}
            yield _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            partial = {"type": "input_json_delta", "partial_json": structured.dumps(use["input"])}
            yield _event(
                "content_block_delta", {"type": "content_block_delta", "index": index, "delta": partial}
            )
            yield _event("content_block_stop", {"type": "content_block_stop", "index": index})
    else:
        block = {"type": "text", "text": ""}
        yield _event(
            "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
        )
        for piece in plan.pieces():
            yield b"".join((_TEXT_DELTA, piece, b'"}}\n\n'))
        yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": usage})
    yield _event("message_stop", {"type": "message_stop"})
