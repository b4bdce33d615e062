"""Go's time formats as Ollama emits and accepts them: RFC3339Nano stamps, duration strings, keep_alive."""

from __future__ import annotations

import math
import re
import time

DEFAULT_KEEP_ALIVE_S = 300.0
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


class DurationError(ValueError):
    """A keep_alive value Ollama's decoder refuses; the message is Go's."""


def rfc3339nano(t: float) -> str:
    """Go's time.RFC3339Nano in UTC: the fraction loses its trailing zeros (or vanishes)."""
    whole = math.floor(t)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    fraction = f"{round((t - whole) * 1e9):09d}"[:9].rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def parse_go_duration(text: str) -> float:
    """time.ParseDuration -> seconds; raises DurationError with Go's wording."""
    body = text[1:] if text[:1] in "+-" else text
    sign = -1.0 if text.startswith("-") else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise DurationError(f'time: invalid duration "{text}"')
    if _NUMBER.fullmatch(text):
        raise DurationError(f'time: missing unit in duration "{text}"')
    total, pos = 0.0, 0
    for match in _TERM.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(body):
        raise DurationError(f'time: invalid duration "{text}"')
    return sign * total


def keep_alive_seconds(value: object) -> float:
    """Ollama's api.Duration: number = seconds, string = Go duration, negative = forever (inf)."""
    if value is None:
        return DEFAULT_KEEP_ALIVE_S
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        kind = {bool: "bool", list: "[]interface {}", dict: "map[string]interface {}"}.get(type(value), "?")
        raise DurationError(f"Unsupported type: '{kind}'")
    seconds = parse_go_duration(value) if isinstance(value, str) else float(value)
    return math.inf if seconds < 0 else seconds
