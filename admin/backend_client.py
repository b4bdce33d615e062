"""The admin's calls to an Ollama backend: probe, inventory, pull (streamed), delete, copy, unload.

Each call opens a short-lived httpx request with a tight timeout, so a dead backend costs a page
a few seconds at most and never touches the proxy.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

TIMEOUT = httpx.Timeout(3.0, connect=2.0)


@dataclass(frozen=True)
class Target:
    """Where and how to reach one backend."""

    name: str
    url: str
    type: str = "ollama"
    credential: str = ""

    def headers(self) -> dict[str, str]:
        # Ollama on loopback only accepts a local Host: send the URL's own host (httpx does).
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}


def file_credential(env_name: str) -> str:
    return os.environ.get(env_name, "") if env_name else ""


@dataclass
class Probe:
    ok: bool
    latency_ms: float = 0.0
    version: str = ""
    error: str = ""
    installed: list[dict] = field(default_factory=list)
    loaded: list[dict] = field(default_factory=list)


def _client(t: Target, timeout: httpx.Timeout = TIMEOUT) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=t.url.rstrip("/"), headers=t.headers(), timeout=timeout, trust_env=False
    )


async def probe(t: Target) -> Probe:
    """Version, latency, installed (/api/tags) and loaded (/api/ps) models; never raises."""
    if t.type != "ollama":
        return await _probe_openai(t)
    try:
        async with _client(t) as c:
            start = time.perf_counter()
            r = await c.get("/api/version")
            latency = (time.perf_counter() - start) * 1000
            r.raise_for_status()
            tags, ps = await asyncio.gather(c.get("/api/tags"), c.get("/api/ps"))
            return Probe(
                ok=True,
                latency_ms=latency,
                version=str(r.json().get("version", "")),
                installed=tags.json().get("models") or [] if tags.is_success else [],
                loaded=ps.json().get("models") or [] if ps.is_success else [],
            )
    except (httpx.HTTPError, ValueError) as exc:
        return Probe(ok=False, error=_reason(exc))


async def _probe_openai(t: Target) -> Probe:
    try:
        async with _client(t) as c:
            start = time.perf_counter()
            r = await c.get("/v1/models")
            latency = (time.perf_counter() - start) * 1000
            r.raise_for_status()
            return Probe(
                ok=True, latency_ms=latency, installed=[{"name": m.get("id", "")} for m in r.json()["data"]]
            )
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return Probe(ok=False, error=_reason(exc))


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    return type(exc).__name__


async def pull(t: Target, model: str) -> AsyncIterator[dict]:
    """The backend's pull progress objects as they arrive (Ollama streams NDJSON)."""
    timeout = httpx.Timeout(None, connect=5.0)
    async with (
        _client(t, timeout) as c,
        c.stream("POST", "/api/pull", json={"model": model, "stream": True}) as r,
    ):
        if r.status_code != 200:
            body = (await r.aread()).decode(errors="replace")
            yield {"error": _error_text(body) or f"HTTP {r.status_code}"}
            return
        async for line in r.aiter_lines():
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    yield {"error": "the backend sent a malformed progress line"}
                    return


async def delete(t: Target, model: str) -> None:
    async with _client(t) as c:
        r = await c.request("DELETE", "/api/delete", json={"model": model})
        _raise(r)


async def copy(t: Target, source: str, destination: str) -> None:
    async with _client(t) as c:
        _raise(await c.post("/api/copy", json={"source": source, "destination": destination}))


async def unload(t: Target, model: str) -> None:
    """Ollama unloads a model on an empty generate with keep_alive 0."""
    async with _client(t, httpx.Timeout(30.0, connect=2.0)) as c:
        _raise(await c.post("/api/generate", json={"model": model, "keep_alive": 0, "stream": False}))


def _raise(r: httpx.Response) -> None:
    if not r.is_success:
        raise BackendError(_error_text(r.text) or f"HTTP {r.status_code}")


def _error_text(body: str) -> str:
    try:
        value = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        return body.strip()[:200]
    return str(value)[:200]


class BackendError(Exception):
    """The backend refused an operation; the message is its own error text."""
