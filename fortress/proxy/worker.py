"""One proxy worker's shared context: the gate, the pool, backend targets, accounting, timeouts.

Everything a connection needs beyond its own bytes lives here, so protocols stay small. Timeouts are
deadlines each connection (and through it its exchange) answers when asked; one sweeper asks twice a
second, instead of a timer handle per request (docs/architecture.md, "Deadlines"). The worker is the
exchange's Host (exchange.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote

from fortress.backends.target import Target
from fortress.config import Config
from fortress.http.replies import KeyRefusal, LocalReply, error_reply
from fortress.metrics.access import MetricsAccess
from fortress.metrics.exposition import CONTENT_TYPE, render
from fortress.metrics.families import families, redis_family
from fortress.metrics.recorder import BackendState, Recorder, UsageCounts
from fortress.pipeline import routes
from fortress.pipeline.chain import Admit, Compiled, Gate
from fortress.pipeline.ip_policy import client_ip as resolve_client_ip
from fortress.pipeline.limits import Limiter
from fortress.pipeline.routes import classify
from fortress.proxy.outbox import Outbox
from fortress.proxy.pool import Pool
from fortress.proxy.usage_pipe import UsagePipe
from fortress.routing import federation
from fortress.routing.auto import AutoChooser, CandidateCache
from fortress.routing.choose import Router
from fortress.routing.inventory import model_key
from fortress.routing.poller import InventoryPoller
from fortress.search.service import WebSearch
from fortress.state.snapshot import Snapshot

if TYPE_CHECKING:
    from fortress.proxy.exchange import Exchange
    from fortress.proxy.freshness import Freshness
    from fortress.proxy.request import Request

log = logging.getLogger("fortress.proxy")
SWEEP_INTERVAL_S = 0.5
LIST_MAX_AGE_S = 1.0  # /api/tags, /api/ps and /v1/models older than this are asked of the backends first
FRESH_WAIT_S = 1.0  # how long a list or an unknown model waits for that (then: the view at hand)
_PROBES = ("/", "/health", "/metrics")
_LIVE_LISTS = frozenset(("/api/tags", "/api/ps", "/v1/models"))
_UNLOADS = frozenset(("0", "0s", "0m", "0h", "0ms"))  # keep_alive durations that unload the model
DEFAULT_KEEP_ALIVE_S = 300  # Ollama keeps a model loaded this long after a request by default


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


class TrustStore(Protocol):
    """Where IP trust sessions are kept (fortress.state.trust.TrustTable: the database)."""

    async def start(self, ip: str, key_id: str, ttl_s: float) -> float: ...

    async def end(self, ip: str, key_id: str) -> bool: ...


class ClusterView(Protocol):
    """Redis as this worker sees it (fortress.cluster.node), when [cluster] redis_url is set."""

    def redis_up(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


Reply = Callable[[LocalReply], None]


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
        self.outbox = Outbox(loop)  # the turn's writes, sent together (outbox.py)
        self.pool = Pool(loop, self.outbox, config.routing.pool_max_idle)
        assert snapshot.policy is not None
        self.routing = snapshot.policy.routing
        self.targets: dict[str, Target] = {}
        self.providers = False
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
        self.fresh: Freshness | None = None  # set by server.py: snapshot checks on demand
        self.trust_store: TrustStore | None = None  # set by server.py: POST/DELETE /auth write there
        self.cluster: ClusterView | None = None  # set by server.py with [cluster] redis_url
        self.metrics: Recorder | None = None  # counting on: see count_with()
        self.metrics_access = MetricsAccess(config.metrics)
        self.snapshot_version = 0
        self.loaded_at = 0.0  # when the snapshot in use was taken (unix time)
        # request ids "<8 hex digits>-<hex counter>", made by C iterators alone (no Python frame per id)
        ids = zip(itertools.repeat(os.urandom(4).hex().encode()), itertools.count(1))
        self.next_id: Callable[[], bytes] = map(b"%s-%x".__mod__, ids).__next__
        # the router's, bound once: the exchange reports every attempt's end here (stage 9)
        self.finished = self.router.finished
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
        self.providers = any(t.kind.static_models for t in targets.values())  # any /api/show of P/M to answer
        self.router.set_backends(snapshot.backends)

    def _compile(self, snapshot: Snapshot) -> Compiled:
        return Compiled.build(snapshot, self.cfg.trusted_proxies, search=self.config.search.enabled)

    def start_polling(self) -> None:
        """Begin (or re-sync) inventory polling; needs the running loop."""
        self.poller.sync()
        self.poller.poke()

    # -- backend choice (stage 9) is the router's; these keep its counts and inventory right -------------
    def model_missing(self, backend: str, model: str) -> None:
        self.router.model_missing(backend, model)
        self.poller.poke(backend)

    def refresh_models(self, then: Callable[[], None]) -> bool:
        """An unknown model: ask every healthy backend for its list once more, then call `then` (within
        FRESH_WAIT_S). False when there is nobody to ask: the model is unknown for good."""
        waits = self.poller.refresh(0.0, self.router.healthy())
        if not waits:
            return False
        self._after(waits, then)
        return True

    def served(self, backend: str, model: str, doc: dict | None) -> None:
        """A request for `model` succeeded there: it is loaded now (or unloaded, for keep_alive 0)."""
        keep = doc.get("keep_alive") if doc is not None else None
        if keep is not None and _unloads(keep):
            self.router.inventory.unloaded(backend, model_key(model))
        else:
            self.router.inventory.served(
                backend, model_key(model), DEFAULT_KEEP_ALIVE_S if keep is None else _keep_s(keep)
            )

    def recheck(self, then: Callable[[], None]) -> bool:
        """Call `then` once the snapshot is known current (freshness.py); False when it cannot be."""
        if self.fresh is None:
            return False
        self.fresh.after_next_check(then)
        return True

    def _after(self, waits: list[asyncio.Future[None]], then: Callable[[], None]) -> None:
        task = self.loop.create_task(asyncio.wait(waits, timeout=FRESH_WAIT_S))
        task.add_done_callback(lambda _task: then())

    # -- what Fortress answers itself (route.federated) ------------------------------------------------
    def answer(
        self, admit: Admit, path: str, method: bytes, client_ip: str, done: Reply
    ) -> LocalReply | None:
        """The reply for a route Fortress answers itself, or None: `done(reply)` follows (a list asked
        of the backends first, an IP trust session written first)."""
        route = admit.route
        if route is routes.HEALTH:
            return self._health(admit)
        if route is routes.AUTH:
            self.loop.create_task(self._auth(admit, method, client_ip, done))
            return None
        if route.name in _LIVE_LISTS:
            waits = self.poller.refresh(LIST_MAX_AGE_S, self.router.healthy())  # the lists' sources
            if waits:
                self._after(waits, lambda: done(self.federated(admit, path)))
                return None
        return self.federated(admit, path)

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

    def _health(self, admit: Admit) -> LocalReply:
        """GET /health (DESIGN §6.5): counts for everyone, per-backend detail for admin-scope keys."""
        router = self.router
        healthy = router.healthy()
        backends = router.export()
        body: dict[str, Any] = {
            "status": "ok" if healthy else "unavailable",
            "backends_healthy": len(healthy),
            "backends_total": len(backends),
        }
        if self.cluster is not None:  # stays 200 while Redis is away: the node serves on its last snapshot
            body["redis"] = "up" if self.cluster.redis_up() else "down"
            body["config_version"] = self.snapshot_version
        if admit.key is not None and admit.key.scope == "admin":
            checked = self.poller.checked()
            now = self.loop.time()
            body["backends"] = [
                {
                    "name": b["name"],
                    "kind": b["type"],
                    "up": b["name"] in healthy,
                    "breaker": b["state"],
                    "outstanding": b["outstanding"],
                    "models": b["models"],
                    "last_check_s": round(now - checked[b["name"]], 3) if b["name"] in checked else None,
                    "last_error": b["last_error"],
                }
                for b in backends
            ]
            if self.cluster is not None:
                body["cluster"] = self.cluster.status()
        return LocalReply(200 if healthy else 503, json.dumps(body).encode())

    async def _auth(self, admit: Admit, method: bytes, client_ip: str, done: Reply) -> None:
        """POST /auth trusts the caller's address as the key; DELETE /auth ends that. The answer goes
        out once this worker's snapshot has the change (other workers recheck before refusing)."""
        key = admit.key
        assert key is not None
        store = self.trust_store
        ttl = self.gate.c.policy.security.ip_trust_ttl_s
        try:
            if store is None:
                raise RuntimeError("no session store")
            if method == b"POST":
                await store.start(client_ip, key.id, ttl)
                body: dict[str, Any] = {"status": "ok", "ip": client_ip, "expires_in": ttl}
            else:
                ended = await store.end(client_ip, key.id)
                body = {"status": "ok" if ended else "not_trusted", "ip": client_ip}
            reply = LocalReply(200, json.dumps(body).encode())
        except Exception as exc:  # the database is busy or gone: say so, never a traceback
            log.warning("IP trust session for %s not stored: %s", client_ip, exc)
            reply = error_reply(503, "the trust session could not be stored; try again")
        if not self.recheck(lambda: done(reply)):
            done(reply)

    def provider_show(self, model: str) -> LocalReply | None:
        """/api/show of a provider's model P/M, answered from its configuration (a provider has no
        /api/show); None for every other model, which goes to a backend as usual."""
        if not self.providers or "/" not in model:  # a provider's models are always named P/M
            return None
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

    # -- accounting (stage 12) ---------------------------------------------------------------------------
    def account(self, ex: Exchange, prompt: int | None, completion: int | None) -> None:
        t0 = ex.t0
        elapsed = time.monotonic() - t0
        ttfb = ex.ttfb
        if ttfb is not None:
            ttfb -= t0
        status = ex.status
        m = self.metrics
        if m is not None:
            m.request(ex.route.name, status, elapsed, ttfb, ex.bytes_in, ex.bytes_out)
            if prompt or completion:
                m.tokens(ex.model, prompt or 0, completion or 0)
        self.requests += 1
        if status >= 500 or ex.error:
            self.errors += 1
        wall = time.time()
        admit = ex.admit
        self.gate.finish(admit, (prompt or 0) + (completion or 0), wall)
        key = admit.key
        if key is not None:
            self.active_keys.add(key.id)
        if self.usage is None:
            return
        target = ex.target
        # one tuple in usage column order (fortress.state.usage.COLUMNS): no object per request
        self.usage.record(
            (
                wall - elapsed,
                ex.request_id.decode("latin-1"),
                key.id if key else None,
                key.user if key else None,
                ex.client_ip,
                ex.method.decode("latin-1"),
                ex.path,
                ex.model,
                target.name if target else None,
                status,
                None if ttfb is None else ttfb * 1000,
                elapsed * 1000,
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
        key = reply.key if isinstance(reply, KeyRefusal) else req.admit.key if req.admit is not None else None
        if key is not None:
            self.active_keys.add(key.id)
        if self.usage is None or (status == 200 and path in _PROBES) or req.method == b"OPTIONS":
            return  # probes and CORS preflights are not usage
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
        found = families(m.table.collect(), time.time())
        if self.cluster is not None:
            found.append(redis_family(self.cluster.redis_up()))
        body = render(found)
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


def _unloads(keep_alive: object) -> bool:
    """keep_alive 0 (a number, or a duration such as "0s") asks Ollama to unload the model."""
    if isinstance(keep_alive, bool):
        return False
    if isinstance(keep_alive, int | float):
        return keep_alive == 0
    return isinstance(keep_alive, str) and keep_alive.strip() in _UNLOADS


def _keep_s(keep_alive: object) -> float:
    """How long the backend keeps the model loaded: the request's keep_alive when it is a positive number
    of seconds, else Ollama's default."""
    if isinstance(keep_alive, int | float) and not isinstance(keep_alive, bool) and keep_alive > 0:
        return keep_alive
    return DEFAULT_KEEP_ALIVE_S
