"""What each model can do (Ollama's /api/show `capabilities`), learnt once per digest, off the hot path.

Pure state plus one small async step. `parse_show` turns an /api/show answer into a `Capabilities`
record; `CapabilityStore` keeps them by model digest (a digest names the exact weights and template,
so what was learnt stays true until the digest changes) and, for OpenAI-type providers, from
configuration. `learn()` asks a backend about the models it lists whose digest is not known yet,
through an injected `show(backend, model)` callable, so it works with whatever client the caller owns.

The router owns one store (`Router.capabilities`, providers adopted in `set_backends`); the poller
(routing/poller.py) calls `learn(store, inventory, show, backend=name)` after each full probe of a
backend that speaks Ollama's model API; model "auto" (routing/auto.py) reads it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fortress.backends.kind import kind_named
from fortress.config import DEFAULT_PROVIDER_CAPABILITIES
from fortress.routing.inventory import Inventory, model_key
from fortress.state.snapshot import BackendRecord

# Ollama's own names (types/model/capability.go); an answer may carry newer ones, which are kept.
CAPABILITIES = ("completion", "vision", "tools", "thinking", "embedding", "insert")
RETRY_AFTER_S = 60.0  # a model whose /api/show failed is asked again after this long

Show = Callable[[str, str], Awaitable[Any]]  # (backend name, model name) -> parsed /api/show JSON


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One model's abilities; None where the backend did not say."""

    names: frozenset[str]
    context_length: int | None = None
    parameter_count: int | None = None

    def has(self, needed: Iterable[str]) -> bool:
        return self.names.issuperset(needed)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def parse_show(payload: Any) -> Capabilities:
    """An /api/show answer -> Capabilities; ValueError when it is not one.

    The context length is `model_info["<architecture>.context_length"]` (any `*.context_length` when
    the architecture is not named); the parameter count is `general.parameter_count`. Ollama versions
    before capabilities existed (< 0.6.4) send none: such a model is taken as completion-only.
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("model_info", {}), dict):
        raise ValueError("/api/show: expected an object with a 'model_info' object")
    listed = payload.get("capabilities")
    if listed is None:
        names = frozenset(DEFAULT_PROVIDER_CAPABILITIES)
    elif isinstance(listed, list) and all(isinstance(c, str) for c in listed):
        names = frozenset(c.strip().lower() for c in listed if c.strip())
    else:
        raise ValueError("/api/show: 'capabilities' must be a list of strings")
    info = payload.get("model_info") or {}
    arch = info.get("general.architecture")
    context = _positive_int(info.get(f"{arch}.context_length")) if isinstance(arch, str) else None
    if context is None:
        context = next(
            (n for k, v in info.items() if k.endswith(".context_length") and (n := _positive_int(v))), None
        )
    return Capabilities(names, context, _positive_int(info.get("general.parameter_count")))


def check_names(names: Iterable[str], where: str) -> None:
    """Validate configured capability names (ValueError naming `where`): known ones, at least one."""
    listed = list(names)
    for name in listed:
        if name not in CAPABILITIES:
            raise ValueError(f"{where}: unknown capability {name!r} (known: {', '.join(CAPABILITIES)})")
    if not listed:
        raise ValueError(f'{where}: name at least one capability, e.g. ["completion"]')


@dataclass(frozen=True, slots=True)
class ToLearn:
    backend: str
    model: str  # the name as that backend lists it
    digest: str


class CapabilityStore:
    """Capabilities by digest (Ollama backends) and by public model key (providers, from config)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_digest: dict[str, Capabilities] = {}
        self._failed: dict[str, float] = {}  # digest -> when it may be asked again
        self._providers: dict[str, Capabilities] = {}  # public model key ("p/m:latest") -> config
        self._clock = clock
        self.generation = 0  # bumped on every change, so views derived from it can be cached

    # -- reads --------------------------------------------------------------------------------------
    def by_digest(self, digest: str) -> Capabilities | None:
        return self._by_digest.get(digest)

    def for_model(self, inventory: Inventory, backend: str, key: str) -> Capabilities | None:
        """What the model `key` can do on `backend`; None while unknown (not learnt yet, or failed)."""
        entry = inventory.get(backend)
        if entry is None or key not in entry.models:
            return None
        if entry.static:
            return self._providers.get(key)
        digest = entry.models[key].get("digest")
        return self._by_digest.get(digest) if isinstance(digest, str) else None

    def export(self, inventory: Inventory) -> dict[str, dict[str, list[str]]]:
        """Backend -> model name as it lists it -> sorted capability names, for the admin's models page
        (through the worker's proxy_stats row); models not learnt yet are left out."""
        out: dict[str, dict[str, list[str]]] = {}
        for entry in inventory:
            learnt: dict[str, list[str]] = {}
            for key, model in entry.models.items():
                caps = self.for_model(inventory, entry.name, key)
                if caps is not None:
                    learnt[model.get("name") or key] = sorted(caps.names)
            if learnt:
                out[entry.name] = learnt
        return out

    def missing(self, inventory: Inventory, backend: str | None = None) -> list[ToLearn]:
        """Models listed (on `backend`, or anywhere) whose digest is neither known nor cooling down.

        One entry per digest: a model installed on five backends is asked about once.
        """
        now = self._clock()
        wanted: dict[str, ToLearn] = {}
        for entry in inventory:
            if entry.static or (backend is not None and entry.name != backend):
                continue
            for model in entry.models.values():
                digest = model.get("digest")
                name = model.get("name") or model.get("model")
                if not isinstance(digest, str) or not digest or not isinstance(name, str):
                    continue
                if digest in self._by_digest or self._failed.get(digest, 0.0) > now or digest in wanted:
                    continue
                wanted[digest] = ToLearn(entry.name, name, digest)
        return list(wanted.values())

    # -- writes -------------------------------------------------------------------------------------
    def learnt(self, digest: str, caps: Capabilities) -> None:
        self._by_digest[digest] = caps
        self._failed.pop(digest, None)
        self.generation += 1

    def failed(self, digest: str, retry_after_s: float = RETRY_AFTER_S) -> None:
        self._failed[digest] = self._clock() + retry_after_s

    def set_providers(self, backends: Iterable[BackendRecord]) -> None:
        """Adopt the configured capabilities of OpenAI-type backends, keyed "<provider>/<model>"."""
        providers: dict[str, Capabilities] = {}
        for record in backends:
            if not kind_named(record.type).static_models:
                continue
            caps = Capabilities(frozenset(record.capabilities))
            for model in record.models:
                providers[model_key(f"{record.name}/{model}")] = caps
        if providers != self._providers:
            self._providers = providers
            self.generation += 1

    def prune(self, inventory: Inventory) -> None:
        """Forget digests no backend lists any more (a model replaced by a new version)."""
        listed = {m.get("digest") for entry in inventory for m in entry.models.values()}
        for digest in [d for d in self._by_digest if d not in listed]:
            del self._by_digest[digest]
            self.generation += 1
        for digest in [d for d in self._failed if d not in listed]:
            del self._failed[digest]


async def learn(store: CapabilityStore, inventory: Inventory, show: Show, backend: str | None = None) -> int:
    """Ask about every model of `backend` (None: all backends) whose digest is not known yet.

    Sequential on purpose: off the hot path, a backend sees one /api/show at a time. A failure
    (any exception from `show`, or an answer that is not /api/show's shape) is retried after
    RETRY_AFTER_S; it never stops the others. Returns how many digests were learnt.
    """
    learnt = 0
    for item in store.missing(inventory, backend):
        try:
            caps = parse_show(await show(item.backend, item.model))
        except Exception:  # the backend's answer is untrusted input; any failure means "ask later"
            store.failed(item.digest)
            continue
        store.learnt(item.digest, caps)
        learnt += 1
    store.prune(inventory)
    return learnt
