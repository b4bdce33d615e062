"""What an OpenAI chat request says, checked as the server being imitated checks it.

Content is a string or parts (`text`, `image_url`, `input_audio`). Ollama's compatibility layer takes
base64 data URLs only; OpenAI also takes http(s) URLs, and insists that every assistant tool call
is answered by a `tool` message naming its `tool_call_id` before the conversation goes on.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fortress.sim.request import Refusal

IMAGE_TOKENS = 85  # what OpenAI charges for a low-detail image
_OLLAMA_IMAGE_PREFIXES = (
    "data:image/jpeg;base64,",
    "data:image/jpg;base64,",
    "data:image/png;base64,",
    "data:image/webp;base64,",
    "data:;base64,",
)
_OPENAI_IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")


@dataclass(frozen=True, slots=True)
class Said:
    """The text of all messages (for token counts), how many images, and the last message's role."""

    text: str
    images: int
    last_role: str


def _image(url: object, provider: bool) -> None:
    if not isinstance(url, str):
        raise Refusal(400, "invalid message format")
    if url.startswith(("http://", "https://")):
        if provider:
            return
        raise Refusal(400, "image URLs are not currently supported, please use base64 encoded data instead")
    if provider:
        mime, _, data = url.removeprefix("data:").partition(";base64,")
        if not url.startswith("data:") or mime not in _OPENAI_IMAGE_TYPES:
            raise Refusal(
                400, f"Invalid image URL: expected a base64 data URL of type {', '.join(_OPENAI_IMAGE_TYPES)}"
            )
    else:
        prefix = next((p for p in _OLLAMA_IMAGE_PREFIXES if url.startswith(p)), None)
        if prefix is None:
            raise Refusal(400, "invalid image input")
        data = url[len(prefix) :]
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(
            400,
            "You uploaded an unsupported image. Please make sure your image is valid."
            if provider
            else "invalid image input",
        ) from None


def _content(content: object, provider: bool) -> tuple[str, int]:
    """(text, image count) of one message's content."""
    if content is None or isinstance(content, str):
        return content or "", 0
    if not isinstance(content, list):
        raise Refusal(400, f"invalid message content type: {type(content).__name__}")
    texts, images = [], 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            _image(image.get("url") if isinstance(image, dict) else image, provider)
            images += 1
        elif kind != "input_audio":
            raise Refusal(400, "invalid message format")
    return "".join(texts), images


def _tool_call_ids(calls: object) -> list[str]:
    """OpenAI's check of an assistant's tool_calls: ids, names and string arguments."""
    if not isinstance(calls, list):
        raise Refusal(400, "Invalid type for 'tool_calls': expected an array")
    ids = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(call.get("id"), str):
            raise Refusal(
                400, "Invalid tool call: expected {id, type: 'function', function: {name, arguments}}"
            )
        if not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
            raise Refusal(400, "Invalid type for 'tool_calls.function.arguments': expected a string")
        ids.append(call["id"])
    return ids


def _unanswered(pending: list[str]) -> Refusal:
    return Refusal(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
        f"'tool_call_id'. The following tool_call_ids did not have response messages: {', '.join(pending)}",
    )


def read(messages: list, provider: bool) -> Said:
    """Check the messages (OpenAI's rules when `provider`, Ollama's otherwise) and say what they hold."""
    texts: list[str] = []
    images = 0
    pending: list[str] = []  # tool calls of the last assistant message not answered yet
    role = ""
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Refusal(400, "invalid message format")
        role = message["role"].lower()
        text, count = _content(message.get("content"), provider)
        texts.append(text)
        images += count
        if not provider:
            continue
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str):
                raise Refusal(
                    400,
                    "Missing parameter 'tool_call_id': messages with role 'tool' must have a 'tool_call_id'.",
                )
            if call_id not in pending:
                raise Refusal(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                    "message with 'tool_calls'.",
                )
            pending.remove(call_id)
            continue
        if pending:
            raise _unanswered(pending)
        if role == "assistant" and message.get("tool_calls"):
            pending = _tool_call_ids(message["tool_calls"])
    if pending and provider:
        raise _unanswered(pending)
    return Said("".join(texts), images, role)
