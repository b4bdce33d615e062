"""Parsing of 'N/WINDOW' limits and '30d' durations used by the CLI, config and admin."""

from __future__ import annotations

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """'90s', '5m', '2h', '30d' (or a bare number of seconds) -> seconds."""
    text = text.strip().lower()
    if text.isdigit():
        value = int(text)
    elif text[:-1].isdigit() and text[-1:] in _UNITS:
        value = int(text[:-1]) * _UNITS[text[-1]]
    else:
        raise ValueError(f"invalid duration {text!r} (use a number with s, m, h or d, e.g. 30d)")
    if value <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return value


def parse_rate(text: str) -> tuple[int, int]:
    """'100/5m' -> (100, 300): count per window in seconds."""
    count, sep, window = text.strip().partition("/")
    if not sep or not count.isdigit() or int(count) <= 0:
        raise ValueError(f"invalid limit {text!r} (use N/WINDOW, e.g. 100/5m)")
    return int(count), parse_duration(window if window[:1].isdigit() else "1" + window)


def format_rate(count: int | None, window_s: int | None) -> str:
    """The inverse of parse_rate, for display; '' when unlimited."""
    if not count or not window_s:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if window_s % size == 0:
            return f"{count}/{window_s // size}{unit}"
    return f"{count}/{window_s}s"
