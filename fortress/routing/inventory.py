"""What each backend holds (from /api/tags, /api/ps, /api/version) and which backends hold a model.

Pure state, fed by the poller with parsed JSON. Lookups on the hot path are one dict access: the
model -> backends index is rebuilt whenever a backend's list changes (off the hot path, at most a few
times a second). Model objects are kept exactly as the backend sent them, for federation.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

_DEFAULT_HOST = "registry.ollama.ai/"
_DEFAULT_NAMESPACE = "library/"
_EXTRA_FRACTION = re.compile(r"(\.\d{6})\d+")
_NONE: frozenset[str] = frozenset()


_KEYS_MAX = 4096


class _Keys(dict[str, str]):
    """model_key's answers, each computed once: a request asks for its model's key several times, and a
    known name is then a dict lookup in C, with no Python frame."""

    def __missing__(self, name: str) -> str:
        if len(self) >= _KEYS_MAX:  # names come from clients: bounded
            self.clear()
        key = self[name] = _model_key(name)
        return key


def _model_key(name: str) -> str:
    """Ollama's matching rule: case-insensitive, the default tag, host and namespace implied.

    "Llama3" == "llama3:latest" == "library/llama3" == "registry.ollama.ai/library/llama3:latest".
    """
    key = name.strip().lower()
    if key.rfind(":") <= key.rfind("/"):  # no tag (a colon before the last slash is a host port)
        key += ":latest"
    if key.startswith(_DEFAULT_HOST):
        key = key[len(_DEFAULT_HOST) :]
    if key.startswith(_DEFAULT_NAMESPACE) and key.count("/") == 1:
        key = key[len(_DEFAULT_NAMESPACE) :]
    return key


model_key: Callable[[str], str] = _Keys().__getitem__  # the key of a model name (_model_key), cached


def parse_time(text: Any) -> float:
    """RFC 3339 (Go prints up to nanoseconds) -> Unix seconds; 0.0 when absent or malformed."""
    if not isinstance(text, str):
        return 0.0
    try:
        return datetime.fromisoformat(_EXTRA_FRACTION.sub(r"\1", text)).timestamp()
    except ValueError:
        return 0.0


def _entries(payload: Any, what: str) -> dict[str, dict[str, Any]]:
    """The {"models": [...]} list of /api/tags or /api/ps keyed by model_key; junk entries skipped."""
    if not isinstance(payload, dict) or not isinstance(payload.get("models", 0), list | None):
        raise ValueError(f"{what}: expected an object with a 'models' list")
    out: dict[str, dict[str, Any]] = {}
    for entry in payload.get("models") or ():
        if not isinstance(entry, dict):
            continue
        name = entry.get("name") or entry.get("model")
        if isinstance(name, str) and name:
            out[model_key(name)] = entry
    return out


@dataclass(slots=True)
class BackendInventory:
    """One backend's last known state; `refreshed_at` is None until /api/tags first answered."""

    name: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> /api/tags object
    modified: dict[str, float] = field(default_factory=dict)  # key -> modified_at as Unix seconds
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> /api/ps object
    expected: set[str] = field(default_factory=set)  # sent there since the last /api/ps
    version: str | None = None
    refreshed_at: float | None = None
    static: bool = False  # an OpenAI-type provider: models come from configuration, not polling
    used: dict[str, float] = field(default_factory=dict)  # provider models: key -> last request (epoch s)


class Inventory:
    """All backends' inventories plus the two indexes the router reads on every request."""

    def __init__(self) -> None:
        self._backends: dict[str, BackendInventory] = {}
        # the two indexes, read by the router on every request as plain dicts (a method call per read
        # costs more than the lookup); rebuilt by _changed(), `in_memory` also added to by mark_loaded()
        self.holding: dict[str, tuple[str, ...]] = {}  # model key -> backends that have it
        self.in_memory: dict[str, frozenset[str]] = {}  # model key -> backends that have it in memory
        self.generation = 0  # bumped on every change, so callers can cache derived bytes

    # -- reads -------------------------------------------------------------------------------------
    def holders(self, key: str) -> tuple[str, ...]:
        """Backends whose list contains the model (key from model_key)."""
        return self.holding.get(key, ())

    def candidates(self, key: str) -> tuple[str, ...]:
        """Backends that may serve the model: those listing it, else those whose list is not known yet."""
        return self.holding.get(key) or self.unrefreshed()

    def loaded_on(self, key: str) -> frozenset[str]:
        return self.in_memory.get(key, _NONE)

    def loaded_count(self, name: str) -> int:
        entry = self._backends.get(name)
        return len(entry.loaded) + len(entry.expected) if entry else 0

    def get(self, name: str) -> BackendInventory | None:
        return self._backends.get(name)

    def served_name(self, name: str, key: str) -> str | None:
        """The name the backend itself uses for the model: a provider's own, without its prefix."""
        entry = self._backends.get(name)
        found = entry.models.get(key) if entry else None
        return found.get("model") if found else None

    def __iter__(self) -> Iterator[BackendInventory]:
        return iter(self._backends.values())

    def unrefreshed(self) -> tuple[str, ...]:
        """Polled backends that never answered /api/tags: their models are unknown, not absent."""
        return tuple(b.name for b in self._backends.values() if b.refreshed_at is None and not b.static)

    # -- writes (poller, router) -----------------------------------------------------------------
    def add(self, name: str) -> None:
        """Track a polled (Ollama-type) backend whose lists are not known yet."""
        if name not in self._backends:
            self._backends[name] = BackendInventory(name)
            self._changed()

    def set_static(self, name: str, models: Iterable[str], capabilities: Iterable[str] = ()) -> None:
        """An OpenAI-type provider answers for its configured models as "<provider>/<model>".

        Entries keep the configured capabilities; `modified` is when this list was adopted (a provider
        says nothing of its models' age), kept across reloads that leave the list as it was.
        """
        listed: dict[str, dict[str, Any]] = {}
        for model in models:
            public = f"{name}/{model}"
            listed[model_key(public)] = {"name": public, "model": model, "capabilities": list(capabilities)}
        old = self._backends.get(name)
        if old is not None and old.static and old.models == listed:
            return
        adopted = dict.fromkeys(listed, time.time())
        self._backends[name] = BackendInventory(
            name, models=listed, modified=adopted, refreshed_at=0.0, static=True
        )
        self._changed()

    def used(self, name: str, key: str) -> None:
        """A request for a provider's model went out: /api/ps shows it as loaded for a while."""
        entry = self._backends.get(name)
        if entry is not None:
            entry.used[key] = time.time()

    def set_tags(self, name: str, payload: Any, now: float) -> None:
        """Apply a parsed /api/tags answer; ValueError if its shape is wrong."""
        models = _entries(payload, "/api/tags")
        entry = self._backends.setdefault(name, BackendInventory(name))
        entry.models = models
        entry.modified = {k: parse_time(m.get("modified_at")) for k, m in models.items()}
        entry.refreshed_at = now
        self._changed()

    def set_ps(self, name: str, payload: Any) -> None:
        """Apply a parsed /api/ps answer; ValueError if its shape is wrong."""
        loaded = _entries(payload, "/api/ps")
        entry = self._backends.setdefault(name, BackendInventory(name))
        entry.loaded = loaded
        entry.expected = set()
        self._changed()

    def set_version(self, name: str, payload: Any) -> None:
        """Apply a parsed /api/version answer; ValueError if its shape is wrong."""
        if not isinstance(payload, dict) or not isinstance(payload.get("version"), str):
            raise ValueError("/api/version: expected an object with a 'version' string")
        self._backends.setdefault(name, BackendInventory(name)).version = payload["version"]

    def mark_loaded(self, name: str, key: str) -> None:
        """Routing sent the model there, so it is (being) loaded; the next /api/ps confirms it.

        Without this, a burst for a cold model would load it on every backend before the poller
        noticed the first one. Kept apart from `loaded`, which holds only what /api/ps reported.
        """
        entry = self._backends.get(name)
        if entry is not None and key not in entry.loaded and key not in entry.expected:
            entry.expected.add(key)
            self.in_memory[key] = self.in_memory.get(key, _NONE) | {name}  # no full rebuild here
            self.generation += 1

    def served(self, name: str, key: str, keep_s: float) -> None:
        """A request for the model succeeded there, so it is in memory now, whatever the last /api/ps
        said: listed as loaded (an entry made from its /api/tags object, expiring `keep_s` from now)
        until the next /api/ps. Nothing to do, the common case, when it is listed as loaded already."""
        entry = self._backends.get(name)
        if entry is None or entry.static or key in entry.loaded:
            return
        listed = entry.models.get(key)
        if listed is None:
            return
        entry.loaded[key] = {
            **{k: listed[k] for k in ("name", "model", "size", "digest", "details") if k in listed},
            "expires_at": datetime.fromtimestamp(time.time() + keep_s, UTC).isoformat(),
            "size_vram": listed.get("size", 0),
        }
        self._changed()

    def unloaded(self, name: str, key: str) -> None:
        """A request unloaded the model there (keep_alive 0)."""
        entry = self._backends.get(name)
        if entry is not None and (key in entry.loaded or key in entry.expected):
            entry.loaded.pop(key, None)
            entry.expected.discard(key)
            self._changed()

    def forget(self, name: str, key: str) -> None:
        """A request found the model missing there: stop routing it there until the next refresh."""
        entry = self._backends.get(name)
        if entry is not None and not entry.static and key in entry.models:
            del entry.models[key]
            entry.modified.pop(key, None)
            entry.loaded.pop(key, None)
            entry.expected.discard(key)
            self._changed()

    def remove(self, name: str) -> None:
        if self._backends.pop(name, None) is not None:
            self._changed()

    def _changed(self) -> None:
        holders: dict[str, list[str]] = {}
        loaded: dict[str, set[str]] = {}
        for entry in self._backends.values():
            for key in entry.models:
                holders.setdefault(key, []).append(entry.name)
            for key in (*entry.loaded, *entry.expected):
                loaded.setdefault(key, set()).add(entry.name)
        self.holding = {k: tuple(v) for k, v in holders.items()}
        self.in_memory = {k: frozenset(v) for k, v in loaded.items()}
        self.generation += 1
