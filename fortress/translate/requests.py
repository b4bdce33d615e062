"""Ollama request bodies for a provider model `P/M`, rewritten as the provider's OpenAI requests.

- `/api/chat` -> `/chat/completions`.
- `/api/generate` -> `/chat/completions` as well: the prompt becomes the user message and `system` a
  system message, which is what Ollama itself does (it applies the model's chat template), and chat
  is the endpoint every provider serves and the only one that takes images, `format` and reasoning.
  Only a raw prompt or a `suffix` (fill-in-the-middle) goes to the legacy `/completions`, since a
  chat template would change what the client asked for.
- `/api/embed`, `/api/embeddings` -> `/embeddings`.

The provider gets its own model name M, `stream_options.include_usage` on every stream (so token
counts are exact), and OpenAI's names for Ollama's options; options without an OpenAI equivalent
(`num_ctx`, `top_k`, `keep_alive`, ...) are dropped. Requests that need no model run (an empty
prompt loads a model in Ollama) are answered locally: see `Translation.local`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from fortress.translate.base import Clock, Stamps, dumps
from fortress.translate.embeddings import EmbedCodec
from fortress.translate.generation import GenerationCodec
from fortress.translate.media import ImageError, image_part

CHAT = "chat"
GENERATE = "generate"
EMBED = "embed"
EMBEDDINGS = "embeddings"
ROUTES = {"/api/chat": CHAT, "/api/generate": GENERATE, "/api/embed": EMBED, "/api/embeddings": EMBEDDINGS}

# Ollama option -> OpenAI parameter, for the options that mean the same on both sides.
_SAMPLING = (
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("stop", "stop"),
    ("frequency_penalty", "frequency_penalty"),
    ("presence_penalty", "presence_penalty"),
)
# Ollama's think levels -> OpenAI's reasoning_effort (OpenAI's highest is "high").
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
_SCHEMA_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_ZERO_KEEP_ALIVE = (0, "0", "0s", "0m", "0h")


class TranslationError(ValueError):
    """A body that cannot be translated: the client gets `status` and `{"error": message}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> TranslationError:
    return TranslationError(400, message)


@dataclass(slots=True)  # one per request: a frozen __init__ would cost a setattr call per field
class Translation:
    """One Ollama request for `P/M`, ready for the provider (or answered locally when `local` is set)."""

    route: str  # CHAT, GENERATE, EMBED or EMBEDDINGS: the Ollama answer the client expects
    model: str  # "P/M": the name the client used, and the one every answer carries
    path: str  # the provider's path under its base URL ("/chat/completions"); "" when `local`
    body: bytes  # the provider's JSON body; b"" when `local`
    stream: bool  # the client's answer is an NDJSON stream
    local: str = ""  # "load", "unload" or "empty": answer with local_reply(), call no provider

    def codec(self, clock: Clock) -> GenerationCodec | EmbedCodec:
        """The codec for the provider's answer; build it when the request is sent (it starts the clock)."""
        if self.route in (EMBED, EMBEDDINGS):
            return EmbedCodec(self.model, legacy=self.route == EMBEDDINGS, clock=clock)
        return GenerationCodec(self.model, chat=self.route == CHAT, stream=self.stream, clock=clock)

    def local_reply(self, clock: Clock) -> bytes:
        """The 200 application/json body Ollama gives when no model has to run."""
        if self.route == EMBED:
            return dumps({"model": self.model, "embeddings": [], "total_duration": 0, "prompt_eval_count": 0})
        if self.route == EMBEDDINGS:
            return b'{"embedding":[]}'
        _, stamp = Stamps(clock).now()
        empty = {"message": {"role": "assistant", "content": ""}} if self.route == CHAT else {"response": ""}
        reply = {"model": self.model, "created_at": stamp.decode(), **empty, "done": True}
        return dumps({**reply, "done_reason": self.local})


def translate(path: str, body: object, provider: str, model: str) -> Translation:
    """Translate an Ollama request (`path` one of ROUTES, `body` its decoded JSON) for model M of provider P.

    Raises TranslationError for bodies Ollama would refuse too (wrong types, bad images, bad format).
    """
    route = ROUTES.get(path)
    if route is None:
        raise TranslationError(404, f"{path} is not translated for provider models")
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    public = f"{provider}/{model}"
    if route == CHAT:
        return _chat(body, public, model)
    if route == GENERATE:
        return _generate(body, public, model)
    return _embed(body, public, model, route)


def _stream_fields(stream: bool) -> dict:
    """OpenAI refuses stream_options on a request that does not stream."""
    return {"stream": True, "stream_options": {"include_usage": True}} if stream else {"stream": False}


def _keep_alive_reason(body: dict) -> str:
    return "unload" if body.get("keep_alive") in _ZERO_KEEP_ALIVE else "load"


def _chat(body: dict, public: str, model: str) -> Translation:
    stream = body.get("stream") is not False
    messages = body.get("messages")
    if not messages:
        return Translation(CHAT, public, "", b"", stream, local=_keep_alive_reason(body))
    request = {"model": model, "messages": _messages(messages), **_stream_fields(stream)}
    tools = _tools(body.get("tools"))
    if tools:
        request["tools"] = tools
    _common(body, request)
    return Translation(CHAT, public, "/chat/completions", dumps(request), stream)


def _generate(body: dict, public: str, model: str) -> Translation:
    stream = body.get("stream") is not False
    prompt = _text(body.get("prompt"), "prompt")
    system = _text(body.get("system"), "system")
    suffix = _text(body.get("suffix"), "suffix")
    images = body.get("images")
    raw = body.get("raw") is True
    if raw and (body.get("template") or system or body.get("context")):
        raise _bad("raw mode does not support template, system, or context")
    if not prompt and not images:
        return Translation(GENERATE, public, "", b"", stream, local=_keep_alive_reason(body))
    if raw or suffix:
        if images:
            raise _bad("images need the chat API: a provider model cannot take them with raw or suffix")
        request: dict = {"model": model, "prompt": prompt, **_stream_fields(stream)}
        if suffix:
            request["suffix"] = suffix
        _sampling(body.get("options"), request)
        return Translation(GENERATE, public, "/completions", dumps(request), stream)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": _content(prompt, images)})
    request = {"model": model, "messages": messages, **_stream_fields(stream)}
    _common(body, request)
    return Translation(GENERATE, public, "/chat/completions", dumps(request), stream)


def _embed(body: dict, public: str, model: str, route: str) -> Translation:
    if route == EMBED:
        value = body.get("input")
        if isinstance(value, list) and not all(isinstance(item, str) for item in value):
            raise _bad("invalid input type")
        if value is not None and not isinstance(value, str | list):
            raise _bad("invalid input type")
    else:
        value = _text(body.get("prompt"), "prompt")
    if not value:
        return Translation(route, public, "", b"", False, local="empty")
    request: dict = {"model": model, "input": value, "encoding_format": "float"}
    dimensions = body.get("dimensions")
    if route == EMBED and isinstance(dimensions, int) and not isinstance(dimensions, bool) and dimensions > 0:
        request["dimensions"] = dimensions
    return Translation(route, public, "/embeddings", dumps(request), False)


def _text(value: object, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(f"{field} must be a string")
    return value


def _common(body: dict, request: dict) -> None:
    """Sampling options, `format` and `think`: shared by chat and chat-shaped generate."""
    _sampling(body.get("options"), request)
    response_format = _response_format(body.get("format"))
    if response_format is not None:
        request["response_format"] = response_format
    think = body.get("think")
    if isinstance(think, str):
        effort = _EFFORT.get(think)
        if effort is None:
            raise _bad(f"invalid think value: {json.dumps(think)}")
        request["reasoning_effort"] = effort
    elif think is not None and not isinstance(think, bool):
        raise _bad(f"invalid think value: {json.dumps(think)}")


def _sampling(options: object, request: dict) -> None:
    if options is None:
        return
    if not isinstance(options, dict):
        raise _bad("options must be an object")
    for ollama_name, openai_name in _SAMPLING:
        value = options.get(ollama_name)
        if value is not None:
            request[openai_name] = value
    limit = options.get("num_predict")
    if isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0:
        request["max_tokens"] = int(limit)  # Ollama's -1 (no limit) and -2 (fill the context) have no twin


def _response_format(value: object) -> dict | None:
    if value is None or value == "":
        return None
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        title = value.get("title")
        name = _SCHEMA_NAME.sub("_", title)[:64] if isinstance(title, str) and title.strip() else ""
        return {"type": "json_schema", "json_schema": {"name": name or "response", "schema": value}}
    raise _bad(f'invalid format: {json.dumps(value)}; expected "json" or a valid JSON Schema object')


def _content(text: str, images: object) -> str | list[dict]:
    """A string, or OpenAI content parts when the message carries images."""
    if not images:
        return text
    if not isinstance(images, list):
        raise _bad("images must be a list of base64 strings")
    try:
        parts = [image_part(image, position) for position, image in enumerate(images)]
    except ImageError as error:
        raise _bad(str(error)) from None
    return [{"type": "text", "text": text}, *parts] if text else parts


def _tools(tools: object) -> list[dict] | None:
    """Ollama's tool definitions already follow OpenAI's; keep the fields both know. [] -> omitted."""
    if not tools:
        return None
    if not isinstance(tools, list):
        raise _bad("tools must be a list")
    converted = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _bad("invalid tool definition: each tool needs a function with a name")
        kept = {key: function[key] for key in ("name", "description", "parameters") if key in function}
        converted.append({"type": "function", "function": kept})
    return converted


def _tool_call(call: object, message: int, index: int) -> dict:
    """Ollama's `{function: {name, arguments: {...}}}` -> OpenAI's, arguments as a JSON string."""
    if (
        not isinstance(call, dict)
        or not isinstance(function := call.get("function"), dict)
        or not isinstance(function.get("name"), str)
    ):
        raise _bad(f"message {message}: invalid tool call")
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
    call_id = (
        call.get("id") if isinstance(call.get("id"), str) and call.get("id") else f"call_{message}_{index}"
    )
    return {"id": call_id, "type": "function", "function": {"name": function["name"], "arguments": arguments}}


def _answered(pending: list[tuple[str, str]], message: dict, position: int) -> str:
    """The tool_call_id a tool message answers: its own, else the oldest open call of its tool.

    Ollama clients often send only `tool_name` (or nothing); OpenAI needs the id of a call the
    assistant made, so calls are matched in order, as the model made them.
    """
    given = message.get("tool_call_id")
    if isinstance(given, str) and given:
        for i, (call_id, _) in enumerate(pending):
            if call_id == given:
                del pending[i]
                break
        return given
    name = message.get("tool_name") or message.get("name")
    for i, (call_id, call_name) in enumerate(pending):
        if call_name == name:
            del pending[i]
            return call_id
    if pending:
        return pending.pop(0)[0]
    return f"call_{name}" if isinstance(name, str) and name else f"call_{position}"


def _messages(messages: object) -> list[dict]:
    if not isinstance(messages, list):
        raise _bad("messages must be a list")
    converted: list[dict] = []
    pending: list[tuple[str, str]] = []  # (id, name) of the last assistant's calls not answered yet
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"message {position} must be an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise _bad(f"message {position}: role must be a string")
        role = role.lower()
        text = _text(message.get("content"), f"message {position} content")
        item: dict = {"role": role, "content": _content(text, message.get("images"))}
        if role == "assistant":
            calls = message.get("tool_calls")
            if calls:
                if not isinstance(calls, list):
                    raise _bad(f"message {position}: tool_calls must be a list")
                item["tool_calls"] = [_tool_call(call, position, i) for i, call in enumerate(calls)]
                pending = [(c["id"], c["function"]["name"]) for c in item["tool_calls"]]
                if item["content"] == "":
                    item["content"] = None
        elif role == "tool":
            item["tool_call_id"] = _answered(pending, message, position)
        converted.append(item)
    return converted
