"""The admin's calls to a backend: probe, inventory, pull (streamed), delete, copy, unload.

Every call goes through the backend's Target and the one control client (fortress/backends/client.py),
so the admin reaches a backend exactly as the proxy does (credential, URL user:pass, CA bundle, path
prefix). Each call has a tight timeout, so a dead backend costs a page a few seconds at most and never
touches the proxy.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fortress.backends.client import BackendClient, BackendError, Reply, probe
from fortress.backends.kind import Probe
from fortress.backends.target import Target

__all__ = ["BackendError", "Probe", "Target", "copy", "delete", "probe", "pull", "unload"]

_JSON = (("Content-Type", "application/json"),)


async def _call(t: Target, method: str, path: str, doc: dict, timeout_s: float = 3.0) -> Reply:
    async with BackendClient(t, timeout_s=timeout_s, keep_alive=False) as client:
        reply = await client.request(method, path, json.dumps(doc).encode(), _JSON)
    if not 200 <= reply.status < 300:
        raise BackendError(f"{method} {path}", _error_text(reply.body) or f"HTTP {reply.status}")
    return reply


async def pull(t: Target, model: str) -> AsyncIterator[dict]:
    """The backend's pull progress objects as they arrive (Ollama streams NDJSON)."""
    body = json.dumps({"model": model, "stream": True}).encode()
    async with (
        BackendClient(t, timeout_s=5.0, keep_alive=False) as client,
        client.stream("POST", "/api/pull", body, _JSON, idle_timeout_s=600.0) as response,
    ):
        if response.status != 200:
            yield {"error": _error_text(await response.read()) or f"HTTP {response.status}"}
            return
        rest = b""
        async for piece in response.pieces():
            *lines, rest = (rest + piece).split(b"\n")
            for line in lines:
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    yield {"error": "the backend sent a malformed progress line"}
                    return


async def delete(t: Target, model: str) -> None:
    await _call(t, "DELETE", "/api/delete", {"model": model})


async def copy(t: Target, source: str, destination: str) -> None:
    await _call(t, "POST", "/api/copy", {"source": source, "destination": destination})


async def unload(t: Target, model: str) -> None:
    """Ollama unloads a model on an empty generate with keep_alive 0."""
    await _call(t, "POST", "/api/generate", {"model": model, "keep_alive": 0, "stream": False}, 30.0)


def _error_text(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        value = json.loads(text).get("error", "")
    except (ValueError, AttributeError):
        return text.strip()[:200]
    return str(value)[:200]
