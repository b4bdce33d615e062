"""Which backend serves a request: pure, synchronous, a few microseconds per decision.

Candidates are the backends whose inventory lists the model, whose breaker lets traffic through and
which are under their `max_concurrent` cap. Among them a backend that has the model loaded wins;
then the fewest outstanding requests (or, when none has it loaded, the least busy: loaded models
plus outstanding requests); remaining ties go by smooth weighted round robin, so `weight` shares
traffic between equals instead of starving the lighter backend. When no breaker lets traffic through,
the backends whose last health check passed still serve (health.py): a breaker routes around a
failing backend, it never takes away the only one that is up.

The proxy's contract (all calls on the event loop, no awaits in between):
    choice = router.choose(model, exclude=tried)    # None -> router.why(model) says 404/503/wait
    router.started(choice.backend.name)             # at once, before connecting (counts, half-open)
    router.finished(choice.backend.name, ok)        # exactly once; ok=health.answered(...) for an
                                                    # answer, False for transport failures
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from fortress.backends.kind import kind_named
from fortress.config import RoutingConfig
from fortress.routing.capabilities import CapabilityStore
from fortress.routing.fairqueue import FairQueue
from fortress.routing.health import CLOSED, Breaker, State
from fortress.routing.inventory import Inventory, model_key
from fortress.state.snapshot import BackendRecord

_NONE: frozenset[str] = frozenset()  # no backend excluded, none loaded: one shared empty set


class Choice(NamedTuple):
    backend: BackendRecord
    model: str | None  # the name to send upstream: a provider (static models) gets its own model name
    loaded: bool  # the backend had the model in memory (known or just sent there)


# One Choice per request, made by tuple.__new__ itself: NamedTuple's own __new__ is a Python function
_choice = tuple.__new__


class Verdict(enum.Enum):
    """Why choose() found nobody, and so what the proxy answers."""

    UNKNOWN_MODEL = "unknown_model"  # no backend lists the model: 404 in the route's error shape
    UNAVAILABLE = "unavailable"  # the backends that list it are unhealthy: 503
    BUSY = "busy"  # healthy holders are all at their cap: enqueue; 503 + Retry-After on timeout


@dataclass(slots=True)
class Waiter:
    """A request parked until a slot frees; `grant` hands it a started Choice, False if it left."""

    model: str | None
    grant: Callable[[Choice], bool]


class _Slot:
    """The router's live view of one backend."""

    __slots__ = ("breaker", "cap", "current", "name", "outstanding", "record", "static", "weight")

    def __init__(self, record: BackendRecord, breaker: Breaker) -> None:
        self.record = record
        self.name = record.name
        self.static = kind_named(record.type).static_models  # a provider: its models under its own names
        self.cap = record.max_concurrent
        self.weight = max(1, record.weight)
        self.breaker = breaker
        self.outstanding = 0
        self.current = 0  # smooth weighted round-robin credit


def _endpoint(record: BackendRecord) -> tuple[str, str, str]:
    return record.url, record.credential, record.ca_bundle


class Router:
    """Backend choice, outstanding counts, passive health, retry pacing and the at-cap queue."""

    def __init__(
        self,
        backends: Iterable[BackendRecord] = (),
        *,
        inventory: Inventory | None = None,
        threshold: int = 3,
        cool_down_s: float = 10.0,
        retries: int = 2,
        backoff_base_s: float = 0.05,
        backoff_max_s: float = 2.0,
        retry_budget_s: float = 2.0,
        queue_limit: int = 256,
        queue_per_key: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.inventory = inventory if inventory is not None else Inventory()
        self.capabilities = CapabilityStore()  # what the models can do: the poller learns, "auto" reads
        self.queue: FairQueue[Waiter] = FairQueue(queue_limit, queue_per_key)
        self._threshold = threshold
        self._cool_down_s = cool_down_s
        self._retries = retries
        self._backoff_base_s = backoff_base_s
        self._backoff_max_s = backoff_max_s
        self._retry_budget_s = retry_budget_s
        self.clock = clock  # the poller stamps inventory refreshes with it
        self._rng = rng if rng is not None else random.Random()
        self._slots: dict[str, _Slot] = {}
        self._general: tuple[str, ...] = ()  # Ollama-type backends, for requests without a model
        self._healthy: frozenset[str] | None = None  # healthy()'s answer until a breaker changes
        self.on_open: Callable[[str], None] | None = None  # a breaker opened: check that backend now
        self.set_backends(backends)

    @classmethod
    def from_config(cls, backends: Iterable[BackendRecord], routing: RoutingConfig, **kwargs: Any) -> Router:
        """A router with [routing]'s retry settings (snapshot.policy.routing)."""
        return cls(
            backends,
            retries=routing.retries,
            backoff_base_s=routing.backoff_base_ms / 1000,
            retry_budget_s=routing.retry_budget_ms / 1000,
            threshold=routing.breaker_threshold,
            cool_down_s=routing.breaker_cool_down_s,
            queue_limit=routing.queue_limit,
            **kwargs,
        )

    # -- configuration ----------------------------------------------------------------------------
    @property
    def backends(self) -> tuple[BackendRecord, ...]:
        return tuple(s.record for s in self._slots.values())

    def set_backends(self, backends: Iterable[BackendRecord]) -> None:
        """Adopt a new backend list (snapshot reload); counts and health of kept names survive."""
        old = self._slots
        self._slots = {}
        for record in backends:
            previous = old.get(record.name)
            # a backend that now points elsewhere starts afresh: its old failures say nothing of the new URL
            moved = previous is not None and _endpoint(previous.record) != _endpoint(record)
            breaker = previous.breaker if previous and not moved else self._breaker()
            slot = _Slot(record, breaker)
            if previous:
                slot.outstanding = previous.outstanding
            self._slots[record.name] = slot
            if slot.static:
                self.inventory.set_static(record.name, record.models, record.capabilities)
            else:
                entry = self.inventory.get(record.name)
                if entry is None or entry.static or moved:
                    self.inventory.remove(record.name)
                    self.inventory.add(record.name)
        for name in old.keys() - self._slots.keys():
            self.inventory.remove(name)
        self.capabilities.set_providers(self.backends)
        self._healthy = None
        self._general = tuple(s.name for s in self._slots.values() if not s.static)

    def _breaker(self) -> Breaker:
        return Breaker(
            threshold=self._threshold,
            cool_down_s=self._cool_down_s,
            clock=self.clock,
            on_change=self._forget_healthy,
        )

    def _forget_healthy(self) -> None:
        self._healthy = None

    # -- the decision -------------------------------------------------------------------------------
    def choose(self, model: str | None, *, exclude: frozenset[str] = _NONE) -> Choice | None:
        """The backend for `model` (None: any Ollama backend, e.g. pull), or None (see why()).

        `exclude` names backends already tried; they are used again only when nobody else can serve.
        """
        inventory = self.inventory
        if model:
            key = model_key(model)
            loaded = inventory.in_memory.get(key, _NONE)
            names = inventory.candidates(key)
        else:
            key, loaded, names = None, _NONE, self._general
        slot = self._pick(names, loaded, exclude)
        if slot is None and exclude:
            slot = self._pick(names, loaded, _NONE)
        if slot is None:
            return None
        if key is None:
            return _choice(Choice, (slot.record, model, False))
        warm = slot.name in loaded
        if slot.static:
            inventory.used(slot.name, key)
            return _choice(Choice, (slot.record, inventory.served_name(slot.name, key), warm))
        if not warm:
            inventory.mark_loaded(slot.name, key)
        return _choice(Choice, (slot.record, model, warm))

    def _pick(self, names: tuple[str, ...], loaded: frozenset[str], exclude: frozenset[str]) -> _Slot | None:
        """The usable backends among `names`; one of them is the answer, several are ranked (_rank)."""
        usable: list[_Slot] = []
        checked: list[_Slot] = []  # breaker open, health check passing: the last resort
        for name in names:
            slot = self._slots.get(name)
            if slot is None or name in exclude or (slot.cap and slot.outstanding >= slot.cap):
                continue
            breaker = slot.breaker
            if breaker.state is CLOSED or breaker.available():
                usable.append(slot)
            elif breaker.probe_ok:
                checked.append(slot)
        if len(usable) == 1:
            return usable[0]  # the common single holder: no ranking to do
        return self._rank(usable, checked, loaded)

    def _rank(self, usable: list[_Slot], checked: list[_Slot], loaded: frozenset[str]) -> _Slot | None:
        """Several candidates (or none usable): warm first, then the least busy. A method of its own, so
        the single holder's path creates none of the closures' cells the ranking needs."""
        warm = [s for s in usable if s.name in loaded]
        if warm:
            best = min(s.outstanding for s in warm)
            return self._round_robin([s for s in warm if s.outstanding == best])
        cold = usable or checked  # none of them has the model loaded
        if cold:
            if len(cold) == 1:
                return cold[0]
            count = self.inventory.loaded_count
            busy = {s.name: count(s.name) + s.outstanding for s in cold}
            best = min(busy.values())
            return self._round_robin([s for s in cold if busy[s.name] == best])
        return None

    @staticmethod
    def _round_robin(tied: list[_Slot]) -> _Slot:
        """Smooth weighted round robin (as nginx): over time each wins in proportion to its weight."""
        if len(tied) == 1:
            return tied[0]
        total = 0
        chosen = tied[0]
        for slot in tied:
            slot.current += slot.weight
            total += slot.weight
            if slot.current > chosen.current:
                chosen = slot
        chosen.current -= total
        return chosen

    def why(self, model: str | None) -> Verdict:
        """After choose() returned None: is the model unknown, its backends down, or all at cap?"""
        names = self.inventory.candidates(model_key(model)) if model else self._general
        slots = [self._slots[n] for n in names if n in self._slots]
        if not slots:
            return Verdict.UNKNOWN_MODEL
        if any(s.breaker.available() or s.breaker.probe_ok for s in slots):
            return Verdict.BUSY
        return Verdict.UNAVAILABLE

    # -- accounting ---------------------------------------------------------------------------------
    def started(self, name: str) -> None:
        slot = self._slots.get(name)
        if slot is not None:
            slot.outstanding += 1
            if slot.breaker.state is not CLOSED:  # only a half-open breaker counts its probe
                slot.breaker.begin()

    def finished(self, name: str, ok: bool, error: str = "") -> None:
        """A request ended; ok=False when the backend failed (health.answered). Frees a slot for waiters."""
        slot = self._slots.get(name)
        if slot is not None:
            if slot.outstanding:  # never below zero
                slot.outstanding -= 1
            if slot.breaker.record(ok, error) and self.on_open is not None:
                self.on_open(name)
        if self.queue.size:
            self.drain()

    def probe(self, name: str, ok: bool, error: str = "") -> None:
        """An active health check's outcome (poller): kept as the breaker's `probe_ok`, counted too."""
        slot = self._slots.get(name)
        if slot is None:
            return
        slot.breaker.checked(ok, error)
        self.drain()

    def model_missing(self, name: str, model: str) -> None:
        """The backend answered "model not found": route the model elsewhere until the next refresh."""
        self.inventory.forget(name, model_key(model))

    # -- waiting when every holder is at its cap ----------------------------------------------------
    def enqueue(self, key_id: str, waiter: Waiter) -> bool:
        """Park a request (after why() said BUSY); False when the queue is full (answer 503)."""
        return self.queue.push(key_id, waiter)

    def dequeue(self, key_id: str, waiter: Waiter) -> bool:
        """Withdraw a parked request (its timeout expired or the client left)."""
        return self.queue.remove(key_id, waiter)

    def drain(self) -> None:
        """Hand freed slots to waiters, keys in round robin; called by finished() and probe()."""
        while self.queue.size:
            taken = self.queue.take(lambda w: self.choose(w.model))
            if taken is None:
                return
            waiter, choice = taken
            self.started(choice.backend.name)
            if not waiter.grant(choice):  # it gave up meanwhile: give the slot back, no health event
                self._slots[choice.backend.name].outstanding -= 1

    # -- retries ------------------------------------------------------------------------------------
    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (1-based): exponential, half of it jittered."""
        ceiling = min(self._backoff_max_s, self._backoff_base_s * 2 ** max(0, attempt - 1))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def may_retry(self, attempt: int, elapsed_s: float) -> bool:
        """Whether retry `attempt` (1-based) is allowed after `elapsed_s` spent (delay included)."""
        return attempt <= self._retries and elapsed_s <= self._retry_budget_s

    def healthy(self) -> frozenset[str]:
        """Backends that may serve (breaker not open, or its health check passing): the federated lists,
        and "auto" on every request, so the set is kept until a breaker or the backend list changes."""
        if self._healthy is None:
            self._healthy = frozenset(
                s.name
                for s in self._slots.values()
                if s.breaker.state is not State.OPEN or s.breaker.probe_ok
            )
        return self._healthy

    # -- export -------------------------------------------------------------------------------------
    def export(self) -> list[dict[str, Any]]:
        """Per-backend health, load and inventory summary, as plain data for the admin."""
        out = []
        for slot in self._slots.values():
            entry = self.inventory.get(slot.name)
            out.append(
                {
                    "name": slot.name,
                    "type": slot.record.type,
                    "outstanding": slot.outstanding,
                    "max_concurrent": slot.cap,
                    "weight": slot.weight,
                    **slot.breaker.export(),
                    "version": entry.version if entry else None,
                    "models": len(entry.models) if entry else 0,
                    "loaded": sorted(entry.loaded) if entry else [],
                    "inventory_age_s": (
                        round(self.clock() - entry.refreshed_at, 3)
                        if entry and entry.refreshed_at is not None and not entry.static
                        else None
                    ),
                }
            )
        return out

    def __repr__(self) -> str:
        busy = sum(s.outstanding for s in self._slots.values())
        return f"<Router [{len(self._slots)} backends, {busy} outstanding, {len(self.queue)} queued]>"
