"""One proxy worker's shared context: the gate, the pool, backend targets, accounting, timeouts.

Everything a connection needs beyond its own bytes lives here, so protocols stay small. Timeouts are
deadlines each connection (and through it its exchange) answers when asked; one sweeper asks twice a
second, instead of a timer handle per request (docs/architecture.md, "Deadlines"). The worker is the
exchange's Host (exchange.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote

from fortress.backends.target import Target
from fortress.config import Config
from fortress.http.replies import LocalReply, error_reply
from fortress.metrics.access import MetricsAccess
from fortress.metrics.exposition import CONTENT_TYPE, render
from fortress.metrics.families import families
from fortress.metrics.recorder import BackendState, Recorder, UsageCounts
from fortress.pipeline.chain import Admit, Compiled, Gate
from fortress.pipeline.ip_policy import client_ip as resolve_client_ip
from fortress.pipeline.limits import Limiter
from fortress.pipeline.routes import classify
from fortress.proxy.pool import Pool
from fortress.proxy.usage_pipe import UsagePipe
from fortress.routing import federation
from fortress.routing.auto import AutoChooser, CandidateCache
from fortress.routing.choose import Router
from fortress.routing.poller import InventoryPoller
from fortress.search.service import WebSearch
from fortress.state.snapshot import Snapshot

if TYPE_CHECKING:
    from fortress.proxy.exchange import Exchange
    from fortress.proxy.request import Request

SWEEP_INTERVAL_S = 0.5
_PROBES = ("/", "/health", "/metrics")


class Connection(Protocol):
    """A client connection as the worker sees it (the ClientProtocol in protocol.py)."""

    peer: str
    ex: Exchange | None

    def busy(self) -> bool:
        """A request is in flight or waiting behind one."""

    def deadline(self, now: float) -> float:
        """When this connection (or its exchange) must be looked at again; inf: not now."""

    def expire(self, now: float) -> None:
        """Past the deadline: time out what is late (a silent client or a silent backend)."""

    def close(self) -> None: ...

    def abort(self) -> None:
        """The worker is stopping: end the exchange in flight (recorded) and close."""


class Worker:
    def __init__(
        self,
        config: Config,
        snapshot: Snapshot,
        loop: asyncio.AbstractEventLoop,
        usage: UsagePipe | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.config = config
        self.cfg = config.proxy
        self.loop = loop
        self.usage = usage
        self.pool = Pool(loop, config.routing.pool_max_idle)
        assert snapshot.policy is not None
        self.routing = snapshot.policy.routing
        self.targets: dict[str, Target] = {}
        self.router = Router.from_config(snapshot.backends, self.routing)
        self.poller = InventoryPoller.from_config(self.router, self.routing)
        candidates = CandidateCache(self.router.inventory, self.router.capabilities)
        self.auto = AutoChooser(candidates, self.router.healthy)  # model "auto" in the body stage
        self.gate = Gate(self._compile(snapshot), limiter, self.auto)
        # /api/web_search and /api/web_fetch (proxy/websearch.py); None: not configured, the routes are 404
        self.search = WebSearch(config.search) if config.search.enabled else None
        self.connections: set[Connection] = set()
        self.per_ip: dict[str, int] = {}
        self.draining = False
        self.requests = 0
        self.errors = 0
        self.active_keys: set[str] = set()  # keys whose rate window may hold requests
        self.metrics: Recorder | None = None  # counting on: see count_with()
        self.metrics_access = MetricsAccess(config.metrics)
        self.snapshot_version = 0
        self.loaded_at = 0.0  # when the snapshot in use was taken (unix time)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex().encode()
        self.swap(snapshot)

    # -- configuration ---------------------------------------------------------------------------
    def swap(self, snapshot: Snapshot) -> None:
        """Take a new snapshot: one reference swap for the gate, targets rebuilt where they changed."""
        self.gate.swap(self._compile(snapshot))
        self.snapshot_version = snapshot.version
        self.loaded_at = time.time()
        assert snapshot.policy is not None
        self.routing = snapshot.policy.routing
        self.auto.configure(self.routing.auto_models)
        targets: dict[str, Target] = {}
        for b in snapshot.backends:
            fresh = Target.from_record(b)
            old = self.targets.get(b.name)
            if old is not None and old.endpoint == fresh.endpoint:
                targets[b.name] = old  # its pooled connections stay good
            else:
                targets[b.name] = fresh
                self.pool.drop(b.name)
        for gone in self.targets.keys() - targets.keys():
            self.pool.drop(gone)
        self.targets = targets
        self.router.set_backends(snapshot.backends)

    def _compile(self, snapshot: Snapshot) -> Compiled:
        return Compiled.build(snapshot, self.cfg.trusted_proxies, search=self.config.search.enabled)

    def start_polling(self) -> None:
        """Begin (or re-sync) inventory polling; needs the running loop."""
        self.poller.sync()
        self.poller.poke()

    # -- backend choice (stage 9) is the router's; these keep its counts and inventory right -------------
    def finished(self, backend: str, ok: bool, error: str = "") -> None:
        self.router.finished(backend, ok, error)

    def model_missing(self, backend: str, model: str) -> None:
        self.router.model_missing(backend, model)
        self.poller.poke(backend)

    def federated(self, admit: Admit, path: str) -> LocalReply:
        """/api/tags, /api/ps, /api/version, /v1/models[/{id}] answered from every healthy backend."""
        router = self.router
        healthy = router.healthy()
        key = admit.key
        allow = self.gate.c.model_allowed.get(key.id) if key is not None and key.models else None
        name = admit.route.name
        if name == "/api/tags":
            return LocalReply(200, federation.tags(router.inventory, healthy, allow))
        if name == "/api/ps":
            return LocalReply(200, federation.ps(router.inventory, healthy, allow, time.time()))
        if name == "/api/version":
            body = federation.version(router.inventory, healthy)
            return LocalReply(200, body) if body else error_reply(503, "no healthy backend is available")
        if name == "/v1/models":
            return LocalReply(200, federation.openai_models(router.inventory, healthy, allow))
        model = unquote(path.partition("/models/")[2])  # /v1/models/{id} or its alias /models/{id}
        body = federation.openai_model(router.inventory, healthy, model, allow)
        return LocalReply(200, body) if body else error_reply(404, f"model '{model}' not found", openai=True)

    def provider_show(self, model: str) -> LocalReply | None:
        """/api/show of a provider's model P/M, answered from its configuration (a provider has no
        /api/show); None for every other model, which goes to a backend as usual."""
        body = federation.show(self.router.inventory, self.router.healthy(), model)
        return LocalReply(200, body) if body is not None else None

    # -- connections -----------------------------------------------------------------------------------
    def connection_opened(self, conn: Connection) -> bool:
        limit = self.cfg.max_connections_per_ip
        count = self.per_ip.get(conn.peer, 0) + 1
        if limit and count > limit:
            return False
        self.per_ip[conn.peer] = count
        self.connections.add(conn)
        return True

    def connection_closed(self, conn: Connection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            left = self.per_ip.get(conn.peer, 1) - 1
            if left:
                self.per_ip[conn.peer] = left
            else:
                self.per_ip.pop(conn.peer, None)

    def client_ip(self, peer: str, xff: bytes | None) -> str:
        trusted = self.gate.c.trusted
        if trusted is None:
            return peer
        return resolve_client_ip(peer, xff.decode("latin-1") if xff else None, trusted)

    def trusts(self, peer: str) -> bool:
        trusted = self.gate.c.trusted
        return trusted is not None and trusted.allows(peer)

    def strip_query_key(self, url: bytes) -> bytes:
        """Remove ?api_key= (when keys in the query are allowed) so the backend never sees it."""
        if b"api_key=" not in url:
            return url
        path, _, query = url.partition(b"?")
        kept = [p for p in query.split(b"&") if not p.startswith(b"api_key=")]
        return path + b"?" + b"&".join(kept) if kept else path

    def next_id(self) -> bytes:
        return b"%s-%x" % (self._id_prefix, next(self._ids))

    # -- accounting (stage 12) ---------------------------------------------------------------------------
    def account(self, ex: Exchange, prompt: int | None, completion: int | None) -> None:
        now = time.monotonic()
        m = self.metrics
        if m is not None:
            ttfb = ex.ttfb
            m.request(
                ex.route.name,
                ex.status,
                now - ex.t0,
                ttfb - ex.t0 if ttfb else None,
                ex.bytes_in,
                ex.bytes_out,
            )
            if prompt or completion:
                m.tokens(ex.model, prompt or 0, completion or 0)
        self.requests += 1
        if ex.status >= 500 or ex.error:
            self.errors += 1
        self.gate.finish(ex.admit, (prompt or 0) + (completion or 0), time.time())
        key = ex.admit.key
        if key is not None:
            self.active_keys.add(key.id)
        if self.usage is None:
            return
        target = ex.target
        # one tuple in usage column order (fortress.state.usage.COLUMNS): no object per request
        self.usage.record(
            (
                time.time() - (now - ex.t0),
                ex.request_id.decode("latin-1"),
                key.id if key else None,
                key.user if key else None,
                ex.client_ip,
                ex.method.decode("latin-1"),
                ex.path,
                ex.model,
                target.name if target else None,
                ex.status,
                (ex.ttfb - ex.t0) * 1000 if ex.ttfb else None,
                (now - ex.t0) * 1000,
                ex.bytes_in,
                ex.bytes_out,
                prompt,
                completion,
                int(ex.stream),
                ex.error,
            )
        )

    def account_local(self, req: Request, status: int, path: str, client_ip: str, reply: LocalReply) -> None:
        """Rejections are usage too (analytics shows error codes); public probes and scrapes are not."""
        self.requests += 1
        now = time.monotonic()
        m = self.metrics
        if m is not None:
            route = req.admit.route.name if req.admit is not None else classify(path).name
            m.request(route, status, now - req.t0, None, req.body_size, len(reply.body))
        key = req.admit.key if req.admit is not None else None
        if key is not None:
            self.active_keys.add(key.id)
        if self.usage is None or (status == 200 and path in _PROBES):
            return
        self.usage.record(
            (
                time.time() - (now - req.t0),
                (req.request_id or b"").decode("latin-1"),
                key.id if key else None,
                key.user if key else None,
                client_ip,
                req.method.decode("latin-1"),
                path,
                None,
                None,
                status,
                None,
                (now - req.t0) * 1000,
                req.body_size,
                len(reply.body),
                None,
                None,
                0,
                reply.body[:200].decode("utf-8", "replace") if status >= 400 else None,
            )
        )

    def key_windows(self) -> dict[str, dict[str, int]]:
        """How full the rate windows of recently active keys are, for the admin dashboard."""
        keys = self.gate.c.snapshot.keys
        default = self.gate.c.policy.default_rate
        now = time.time()
        out: dict[str, dict[str, int]] = {}
        for key_id in list(self.active_keys):
            record = keys.get(key_id)
            rate = (record.rate or default) if record is not None else None
            used = 0
            if rate is not None:
                d = self.gate.limiter.peek(f"r:{key_id}", rate[0], rate[1], now)
                used = d.limit - d.remaining
                out[key_id] = {"used": used, "limit": d.limit, "window_s": rate[1]}
            if not used:
                self.active_keys.discard(key_id)  # an empty window needs no more reporting
        return out

    # -- metrics (docs/architecture.md, "Metrics") ----------------------------------------------------------
    def count_with(self, recorder: Recorder) -> None:
        """Metrics on: accounting counts into this worker's slot, the gate answers /metrics."""
        self.metrics = recorder
        self.gate.refused = recorder.refused
        self.gate.metrics = self.scrape

    def publish_metrics(self) -> None:
        """The figures that are states, not events: once a second, and before this worker answers a scrape."""
        m = self.metrics
        if m is None:
            return
        pool = self.pool.counts()
        backends = [
            BackendState(
                b["name"], b["state"] != "open", b["state"], b["outstanding"], *pool.get(b["name"], (0, 0))
            )
            for b in self.router.export()
        ]
        u = self.usage
        usage = (
            UsageCounts(u.acknowledged, u.dropped, u.unacknowledged, u.restarts)
            if u
            else UsageCounts(0, 0, 0, 0)
        )
        m.publish(self.in_flight(), backends, usage, self.snapshot_version, self.loaded_at)

    def scrape(self, client_ip: str, scope: str | None) -> LocalReply:
        """GET /metrics: every worker's slot summed, whichever worker the scrape landed on."""
        verdict = self.metrics_access.decide(client_ip, scope)
        if verdict.status != 200:
            return error_reply(verdict.status, verdict.message)
        m = self.metrics
        assert m is not None  # the gate asks only once count_with() ran
        self.publish_metrics()
        body = render(families(m.table.collect(), time.time()))
        return LocalReply(200, body, content_type=CONTENT_TYPE)

    # -- timeouts ------------------------------------------------------------------------------------------
    def sweep(self) -> None:
        """Ask every connection for its deadline and expire the late ones; expire idle backend sockets."""
        now = time.monotonic()
        for conn in list(self.connections):
            if conn.deadline(now) < now:
                conn.expire(now)
        self.pool.sweep(now)

    def in_flight(self) -> int:
        return sum(1 for c in self.connections if c.ex is not None)

    async def drain(self, deadline_s: float) -> None:
        """Graceful stop: idle connections close now, busy ones after their response, all by the deadline."""
        self.draining = True
        for conn in list(self.connections):
            if not conn.busy():
                conn.close()
        end = time.monotonic() + deadline_s
        while self.connections and time.monotonic() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
        self.pool.close_all()
        if self.search is not None:
            await self.search.aclose()
