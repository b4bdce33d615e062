"""The model lists a client sees through Fortress: every healthy backend's, merged, as response bytes.

Pure functions of the inventory, the set of healthy backend names and an optional predicate on the
public model name (a key's allow-list), so a key never learns that a model it may not use exists.
Providers (OpenAI-compatible backends) appear under "<provider>/<model>" (P/M) in every list: in
/api/tags and /v1/models from their configuration, in /api/ps while they were used in the last
KEEP_ALIVE_S (as Ollama keeps a model loaded), and /api/show of P/M is answered from configuration,
with the entries of `fortress.translate.models`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from fortress.routing.inventory import BackendInventory, Inventory, model_key, parse_time
from fortress.translate import models as entries

Allow = Callable[[str], bool] | None
KEEP_ALIVE_S = 300.0  # Ollama's default keep_alive: how long a provider model used counts as loaded
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _sources(inventory: Inventory, healthy: Collection[str], static: bool) -> Iterator[BackendInventory]:
    for entry in inventory:
        if entry.name in healthy and (static or not entry.static):
            yield entry


def _name(model: dict[str, Any]) -> str:
    return model.get("name") or model.get("model") or ""


def _allowed(model: dict[str, Any], allow: Allow) -> bool:
    return allow is None or allow(_name(model))


def _merged_models(
    inventory: Inventory, healthy: Collection[str], allow: Allow
) -> list[tuple[str, float, dict[str, Any], str | None]]:
    """(key, modified_at, object, provider or None) per distinct model, the newest copy winning,
    newest first."""
    best: dict[str, tuple[str, float, dict[str, Any], str | None]] = {}
    for entry in _sources(inventory, healthy, True):
        provider = entry.name if entry.static else None
        for key, model in entry.models.items():
            modified = entry.modified.get(key, 0.0)
            if key not in best or modified > best[key][1]:
                best[key] = (key, modified, model, provider)
    merged = [found for found in best.values() if _allowed(found[2], allow)]
    merged.sort(key=lambda found: (-found[1], found[0]))
    return merged


def tags(inventory: Inventory, healthy: Collection[str], allow: Allow = None) -> bytes:
    """GET /api/tags: deduplicated by name, the newest modified_at wins, newest first (as Ollama)."""
    models = [
        entries.tag_entry(provider, model["model"], modified) if provider else model
        for _, modified, model, provider in _merged_models(inventory, healthy, allow)
    ]
    return _dumps({"models": models})


def ps(
    inventory: Inventory, healthy: Collection[str], allow: Allow = None, now: float | None = None
) -> bytes:
    """GET /api/ps: loaded models, one per name (latest expiry), sorted by expires_at descending."""
    now = time.time() if now is None else now
    best: dict[str, tuple[float, dict[str, Any]]] = {}
    for entry in _sources(inventory, healthy, True):
        if entry.static:
            loaded = _used(entry, now)
        else:
            loaded = ((k, parse_time(m.get("expires_at")), m) for k, m in entry.loaded.items())
        for key, expires, model in loaded:
            if _allowed(model, allow) and (key not in best or expires > best[key][0]):
                best[key] = (expires, model)
    ordered = sorted(best.values(), key=lambda pair: -pair[0])
    return _dumps({"models": [model for _, model in ordered]})


def _used(entry: BackendInventory, now: float) -> Iterator[tuple[str, float, dict[str, Any]]]:
    """A provider's models used within KEEP_ALIVE_S, as /api/ps entries."""
    for key, at in entry.used.items():
        model = entry.models.get(key)
        if model is not None and at + KEEP_ALIVE_S > now:
            expires = at + KEEP_ALIVE_S
            yield key, expires, entries.ps_entry(entry.name, model["model"], expires)


def show(inventory: Inventory, healthy: Collection[str], name: str) -> bytes | None:
    """POST /api/show of a healthy provider's model P/M, from its configuration; None for any other."""
    key = model_key(name)
    for entry in _sources(inventory, healthy, True):
        model = entry.models.get(key) if entry.static else None
        if model is not None:
            modified = entry.modified.get(key, 0.0)
            capabilities = model.get("capabilities") or None
            return _dumps(entries.show_body(entry.name, model["model"], modified, capabilities))
    return None


def _version_order(text: str) -> tuple[int, int, int, int, str] | None:
    """Semantic order: 0.5.1-rc2 < 0.5.1 < 0.5.10; None for text that is not a version."""
    match = _VERSION.fullmatch(text.strip())
    if match is None:
        return None
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def version(inventory: Inventory, healthy: Collection[str]) -> bytes | None:
    """GET /api/version: the lowest version among healthy backends (what every client can rely on).

    None when no healthy backend has reported one (the proxy answers 503).
    """
    found = [
        (order, entry.version)
        for entry in _sources(inventory, healthy, False)
        if entry.version and (order := _version_order(entry.version)) is not None
    ]
    return _dumps({"version": min(found)[1]}) if found else None


def _owner(name: str) -> str:
    """Ollama's owned_by: the namespace of the name ("library" for official models)."""
    path = name.rsplit(":", 1)[0] if name.rfind(":") > name.rfind("/") else name
    parts = path.split("/")
    return "library" if len(parts) == 1 else parts[-2]


def _openai_object(model_id: str, modified: float, model: dict[str, Any], provider: str | None) -> dict:
    return {
        "id": model_id,
        "object": "model",
        "created": int(modified),
        "owned_by": provider or _owner(_name(model) or model_id),
    }


def openai_models(inventory: Inventory, healthy: Collection[str], allow: Allow = None) -> bytes:
    """GET /v1/models: the same merge as /api/tags, in OpenAI's list shape."""
    data = [
        _openai_object(_name(model), modified, model, provider)
        for _, modified, model, provider in _merged_models(inventory, healthy, allow)
    ]
    return _dumps({"object": "list", "data": data})


def openai_model(
    inventory: Inventory, healthy: Collection[str], model_id: str, allow: Allow = None
) -> bytes | None:
    """GET /v1/models/{id}: that model's object with the id echoed, or None (404) if not visible."""
    wanted = model_key(model_id)
    for key, modified, model, provider in _merged_models(inventory, healthy, allow):
        if key == wanted:
            return _dumps(_openai_object(model_id, modified, model, provider))
    return None
