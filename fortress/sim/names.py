"""Ollama model names (types/model/name.go): parse, validate, and the short form /api/tags shows."""

from __future__ import annotations

import re

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")


def display_name(name: str) -> str | None:
    """'llama3.2' -> 'llama3.2:latest'; 'registry.ollama.ai/library/x:1' -> 'x:1'; None when invalid."""
    rest = name.partition("://")[2] if "://" in name else name
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        base, tag = rest[:colon], rest[colon + 1 :]
    else:
        base, tag = rest, DEFAULT_TAG
    parts = base.split("/")
    if len(parts) == 1:
        host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
    elif len(parts) == 2:
        host, (namespace, model) = DEFAULT_HOST, parts
    elif len(parts) == 3:
        host, namespace, model = parts
    else:
        return None
    if not (
        _HOST.fullmatch(host) and _NAMESPACE.fullmatch(namespace) and _PART.fullmatch(model)
    ) or not _PART.fullmatch(tag):
        return None
    if host.lower() != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def key(display: str) -> str:
    """Lookup key: Ollama matches installed names case-insensitively."""
    return display.lower()


def full_name(display: str) -> str:
    """'m:latest' -> 'registry.ollama.ai/library/m:latest', as capability errors print it."""
    slashes = display.count("/")
    prefix = ("registry.ollama.ai/library/", "registry.ollama.ai/", "")[min(slashes, 2)]
    return prefix + display
