"""Helpers for the translation tests: a scripted clock and provider answers built like OpenAI's."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable

SSE_HEADERS = [(b"Content-Type", b"text/event-stream; charset=utf-8")]
JSON_HEADERS = [(b"content-type", b"application/json")]
START_NS = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
CITY = {"city": 'Café "naïve" \\ ✓', "unit": "celsius"}  # what the simulator's model calls WEATHER with


def ticking(step_ns: int = 1_000_000, start: int = START_NS) -> Callable[[], int]:
    """A clock that moves `step_ns` at every reading: outputs depend only on how often it is read."""
    now = start - step_ns

    def clock() -> int:
        nonlocal now
        now += step_ns
        return now

    return clock


def event(value: object, spaced: bool = False) -> bytes:
    """One SSE event, compact as providers send them (`spaced`: Python's default separators)."""
    separators = (", ", ": ") if spaced else (",", ":")
    return b"data: " + json.dumps(value, ensure_ascii=False, separators=separators).encode() + b"\n\n"


def chunk(
    delta: dict | None = None, finish: str | None = None, model: str = "gpt-4o-mini", **extra: object
) -> bytes:
    """One chat.completion.chunk event; `delta=None` with `extra` gives chunks like the usage one."""
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    base = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": model,
        "choices": choices,
    }
    return event({**base, **extra})


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def text_stream(pieces: Iterable[str], finish: str = "stop", prompt: int = 9) -> bytes:
    """An OpenAI chat stream with usage asked for: role chunk, content deltas, finish, usage, [DONE]."""
    pieces = list(pieces)
    events = [chunk({"role": "assistant", "content": "", "refusal": None}, usage=None)]
    events += [chunk({"content": piece}, usage=None) for piece in pieces]
    events.append(chunk({}, finish, usage=None))
    events.append(chunk(None, usage=usage(prompt, len(pieces))))
    events.append(b"data: [DONE]\n\n")
    return b"".join(events)


def lines(data: bytes) -> list[dict]:
    """NDJSON -> objects; fails on blank lines, as the ollama client does."""
    assert data.endswith(b"\n"), data[-80:]
    return [json.loads(line) for line in data.split(b"\n")[:-1]]
