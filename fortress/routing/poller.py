"""Keeps the router's inventory and health current, off the hot path: one small task per backend.

Every `interval_s` (and at once after `poke`) it asks the backend's kind for a full probe (Ollama:
/api/version, /api/tags and /api/ps); between those, every `health_interval_s`, the health part alone
(Ollama: /api/version) as the active health check (and half-open probe). After a full probe of a
backend that speaks Ollama's model API, each model whose digest is new gets one POST /api/show: its
capabilities (routing/capabilities.py, for model "auto"), learnt once per digest. Nothing else is
sent: polling never loads a model or runs inference. `refresh()` asks for a full probe on demand (a
client listing models, a model nobody lists) and hands back futures that resolve when it is done:
callers at the same time share one probe, and full probes of one backend start at least
`min_refresh_s` apart, so a flood of unknown models costs a few GETs a second, not one each. Kinds
with static models (OpenAI-compatible providers) are not polled; their configured models are the
inventory, their capabilities come from configuration and their health is passive. Backends are
reached through their Target and the one control client, exactly as the proxy reaches them (URL
user:pass, credential, CA bundle).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from fortress.backends.client import CONTROL_HEADERS, BackendClient, BackendError
from fortress.backends.kind import kind_named
from fortress.backends.target import Target
from fortress.config import RoutingConfig
from fortress.routing.capabilities import Show, learn
from fortress.routing.choose import Router
from fortress.state.snapshot import BackendRecord

_SHOW_HEADERS = (*CONTROL_HEADERS, ("Content-Type", "application/json"))


@dataclass
class _Watch:
    record: BackendRecord
    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    first_round: asyncio.Event = field(default_factory=asyncio.Event)
    next_full: asyncio.Future[None] | None = None  # resolved when the next full probe has ended
    full_at: float = float("-inf")  # when the last full probe started (its lists are that old)
    checked_at: float | None = None  # when the last probe of any kind ended


def _connection(record: BackendRecord) -> tuple[str, str, str, str]:
    return record.url, record.credential, record.ca_bundle, record.type


class InventoryPoller:
    """Polls every backend the router knows whose kind lists its own models; call sync() after
    router.set_backends()."""

    def __init__(
        self,
        router: Router,
        *,
        interval_s: float = 10.0,
        health_interval_s: float = 5.0,
        timeout_s: float = 3.0,
        keep_alive: bool = True,
        min_refresh_s: float = 0.25,
    ) -> None:
        self.router = router
        self.interval_s = interval_s
        self.health_interval_s = health_interval_s
        self.timeout_s = timeout_s
        self.keep_alive = keep_alive
        self.min_refresh_s = min_refresh_s
        self._watches: dict[str, _Watch] = {}
        router.on_open = self.poke  # a breaker that opens gets its health checked at once

    @classmethod
    def from_config(cls, router: Router, routing: RoutingConfig) -> InventoryPoller:
        return cls(
            router,
            interval_s=routing.inventory_interval_s,
            health_interval_s=routing.health_interval_s,
            timeout_s=routing.connect_timeout_s,
        )

    def sync(self) -> None:
        """Start polling new backends, stop removed ones, restart those whose URL or secrets changed."""
        wanted = {b.name: b for b in self.router.backends if not kind_named(b.type).static_models}
        for name, watch in list(self._watches.items()):
            record = wanted.get(name)
            if record is None or _connection(record) != _connection(watch.record):
                self._stop(name)
        for name, record in wanted.items():
            if name not in self._watches:
                watch = self._watches[name] = _Watch(record)
                watch.task = asyncio.get_running_loop().create_task(self._run(watch), name=f"poll {name}")

    def poke(self, name: str | None = None) -> None:
        """Refresh one backend (None: all) now: after pull/delete/copy/create, or a missing model."""
        for watch in self._watches.values() if name is None else filter(None, [self._watches.get(name)]):
            watch.wake.set()

    def refresh(self, max_age_s: float, among: Collection[str]) -> list[asyncio.Future[None]]:
        """A full probe, starting from now on, of each backend named in `among` whose lists are older
        than `max_age_s` (0: all of them); the futures resolve when each has ended (answered or failed).
        Empty: nothing to do."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waits: list[asyncio.Future[None]] = []
        for name, watch in self._watches.items():
            if name not in among or (max_age_s and now - watch.full_at < max_age_s):
                continue
            if watch.next_full is None:
                watch.next_full = loop.create_future()
                watch.wake.set()
            waits.append(watch.next_full)
        return waits

    def checked(self) -> dict[str, float]:
        """Backend name -> when its last probe ended (the loop's clock), for those probed yet."""
        return {name: w.checked_at for name, w in self._watches.items() if w.checked_at is not None}

    async def ready(self, timeout_s: float) -> bool:
        """Wait until every backend has been polled once (answered or failed); False on timeout."""
        waits = [w.first_round.wait() for w in self._watches.values()]
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*waits)
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        tasks = [t for name in list(self._watches) if (t := self._stop(name)) is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop(self, name: str) -> asyncio.Task[None] | None:
        watch = self._watches.pop(name)
        if watch.task is not None:
            watch.task.cancel()
        if watch.next_full is not None and not watch.next_full.done():
            watch.next_full.set_result(None)  # nobody waits for a backend that is gone
        return watch.task

    async def _run(self, watch: _Watch) -> None:
        record = watch.record
        client = BackendClient(
            Target.from_record(record), timeout_s=self.timeout_s, keep_alive=self.keep_alive
        )
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        try:
            while True:
                if watch.wake.is_set() or loop.time() >= next_full:
                    watch.wake.clear()
                    await asyncio.sleep(watch.full_at + self.min_refresh_s - loop.time())
                    done, watch.next_full = watch.next_full, None
                    watch.full_at = loop.time()
                    await self._poll(record.name, client, models=True)
                    next_full = loop.time() + self.interval_s
                    watch.first_round.set()
                    if done is not None and not done.done():
                        done.set_result(None)
                else:
                    await self._poll(record.name, client, models=False)
                watch.checked_at = loop.time()
                pause = max(0.0, min(self.health_interval_s, next_full - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.wake.wait(), pause)
        finally:
            await client.aclose()

    async def _poll(self, name: str, client: BackendClient, models: bool) -> None:
        """A probe (with `models`: version, models and loaded models); any failure counts against the
        backend's health."""
        inventory = self.router.inventory
        try:
            probe = await client.target.kind.probe(client, models)
            inventory.set_version(name, {"version": probe.version})
            if models:
                inventory.set_tags(name, {"models": probe.installed}, self.router.clock())
                inventory.set_ps(name, {"models": probe.loaded})
        except (BackendError, ValueError) as exc:
            self.router.probe(name, False, str(exc))
            return
        self.router.probe(name, True)
        if models and client.target.kind.manages_models:
            await learn(self.router.capabilities, inventory, _shower(client), backend=name)


def _shower(client: BackendClient) -> Show:
    """`show` for capabilities.learn(): POST /api/show on this backend's kept-alive connection."""

    async def show(_backend: str, model: str) -> Any:
        body = json.dumps({"model": model}).encode()
        return (await client.request("POST", "/api/show", body, _SHOW_HEADERS)).ok_json("/api/show")

    return show
