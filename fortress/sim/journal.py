"""The last request heads the simulator received, for tests that assert what reached the backend."""

from __future__ import annotations

from collections import deque


class Journal:
    """A bounded log of request heads; entries are dicts so the body length can be filled in later."""

    def __init__(self, size: int = 200) -> None:
        self._entries: deque[dict] = deque(maxlen=size)

    def record(self, method: str, target: str, headers: list[tuple[str, str]], peer: str) -> dict:
        entry = {
            "method": method,
            "path": target,
            "headers": [list(pair) for pair in headers],
            "body_length": 0,
            "peer": peer,
        }
        self._entries.append(entry)
        return entry

    def entries(self) -> list[dict]:
        return list(self._entries)

    def clear(self) -> None:
        self._entries.clear()


def note(entry: dict | None, model: object) -> None:
    """Record the model a request body named (so tests can assert the name a backend was asked for)."""
    if entry is not None:
        entry["model"] = model
