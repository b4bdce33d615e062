"""Canned Ollama answers (shapes from OLLAMA_API.md) shared by the routing tests."""

from __future__ import annotations

from typing import Any

from fortress.state.snapshot import BackendRecord


def tag(name: str, modified_at: str = "2025-01-01T00:00:00Z", digest: str = "0" * 64) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at,
        "size": 1234,
        "digest": digest,
        "details": {"format": "gguf", "family": "llama", "parameter_size": "1B"},
    }


def tags(*names: str) -> dict[str, Any]:
    return {"models": [tag(n) for n in names]}


def ps(*names: str, expires_at: str = "2030-01-01T00:00:00Z") -> dict[str, Any]:
    return {"models": [{**tag(n), "expires_at": expires_at, "size_vram": 1} for n in names]}


def backend(name: str, **kwargs: Any) -> BackendRecord:
    return BackendRecord(name=name, url=f"http://127.0.0.1:1/{name}", **kwargs)


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
