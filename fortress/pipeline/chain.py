"""The ordered stages of the hot path (DESIGN §2, stages 2-8), free of sockets.

Contract: `Gate.head()` runs once per request on the parsed head and answers either a LocalReply
(Fortress answers and the request goes no further), an Admit (carry on), or RECHECK: the request would
be refused for something a newer snapshot may know (a key it has not seen), so the caller asks again
with `settled=True` once the snapshot is known to be current (proxy/freshness.py). Cheap rejects come
first: route class, IP policy, brute-force lockout, key (keysource.py; or the address's IP trust
session), key policy, rate limits. A key sent only in the JSON body (`key_in_body`) is read by
`Gate.body_key()` once the body is in. `Gate.body()` runs only for routes whose JSON body must be
read: it parses once, the way the backend will (`jsonbody`), runs the Ollama-specific validation,
resolves `"model": "auto"` (through the injected `AutoModel`, routing/auto.py) or checks the model
against the key's allow-list, clamps, and answers a LocalReply or the bytes to forward.
`Gate.preflight()` answers CORS's OPTIONS. Stateful parts (limiter, failure counters, the auto choice)
are injected, the clock is passed in: tests drive it directly.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from fortress import keys
from fortress.http.replies import KeyRefusal, LocalReply, error_reply
from fortress.pipeline import jsonbody, routes
from fortress.pipeline.bruteforce import Lockout
from fortress.pipeline.cors import Cors
from fortress.pipeline.ip_policy import IpPolicy
from fortress.pipeline.keysource import bearer_key, presented_key
from fortress.pipeline.limits import Decision, Limiter, LocalLimiter
from fortress.pipeline.routes import Kind, Route
from fortress.pipeline.validate import (
    BodyCheck,
    Reject,
    blob_digest_from_path,
    body_checks,
    clamp_options,
    drop_insecure,
)
from fortress.state.snapshot import KeyRecord, Policy, Snapshot

OK_ROOT = LocalReply(200, b"Ollama is running", content_type=b"text/plain; charset=utf-8")
SEARCH_SCOPES = ("search", "admin")  # key scopes that may use /api/web_search and /api/web_fetch
VERIFIED_MAX = 10_000  # Compiled.verified entries (a full cache starts afresh)
Headers = tuple[tuple[bytes, bytes], ...]
_new = tuple.__new__  # a NamedTuple made without its Python __new__
# the route kinds the stages test, as plain names: an Enum member read through its class (Kind.OLLAMA)
# costs ~70 ns in Python 3.11, several times per request
PUBLIC, METRICS, SEARCH, NEVER, UNKNOWN = (
    Kind.PUBLIC,
    Kind.METRICS,
    Kind.SEARCH,
    Kind.NEVER,
    Kind.UNKNOWN,
)


class Recheck:
    """The answer "ask again once the snapshot is current" (a singleton: RECHECK)."""

    __slots__ = ()


RECHECK = Recheck()


@dataclass(slots=True)
class Admit:
    """A request that passed the head stages."""

    route: Route
    key: KeyRecord | None
    rate_headers: Headers = ()  # added to every answer: rate-limit state, and X-Fortress-Model once chosen
    model: str | None = None
    slot: str | None = None  # the concurrency bucket to release when the request ends
    key_in_body: bool = False  # no key in the head: Gate.body_key() reads the body's api_key first
    plan: KeyPlan | None = None  # the key's decisions for this snapshot (None: Gate.body looks it up)


class Forward(NamedTuple):
    """The outcome of the body stage: what to send upstream. Made with tuple.__new__ (no Python frame)."""

    body: bytes
    model: str | None
    doc: dict | None  # the parsed body, for a provider that needs its own model name


class AutoModel(Protocol):
    """Model "auto" (routing/auto.py, AutoChooser): None when the request does not ask for it, else the
    model chosen with its X-Fortress-Model header, or the refusal to answer. Asked only when the model's
    name has "auto" in it in any case (a name without it never asks: the usual request makes no call)."""

    def pick(
        self, route: Route, body: dict[str, Any], key: KeyRecord | None, allowed: Callable[[str], bool]
    ) -> tuple[str, tuple[bytes, bytes]] | LocalReply | None: ...


def _model_matcher(globs: tuple[str, ...]) -> Callable[[str], bool]:
    if not globs:
        return _all
    names = [g.strip().lower() for g in globs if g.strip()]
    pattern = re.compile("|".join(fnmatch.translate(n) for n in names))
    # "llama3" allows "llama3:latest" too, as Ollama resolves the default tag
    return lambda name: bool(pattern.match(name.lower()) or pattern.match(_without_latest(name.lower())))


def _without_latest(name: str) -> str:
    return name[:-7] if name.endswith(":latest") else name


class KeyPlan:
    """What a key's requests decide alike until the next snapshot (its scope, limits, model list, clamps),
    worked out once per key and snapshot instead of on every request."""

    __slots__ = (
        "admin",
        "allowed",
        "cap",
        "clamps",
        "key",
        "limited",
        "rate",
        "rate_id",
        "search",
        "slot_id",
        "tokens",
        "tokens_id",
        "until",
    )

    def __init__(self, key: KeyRecord, policy: Policy) -> None:
        self.key = key
        # usable while now < until; an inactive key never is (Gate._usable words its refusal)
        expires = math.inf if key.expires_at is None else key.expires_at
        self.until = expires if key.state == "active" else -math.inf
        self.admin = key.scope == "admin"
        self.search = key.scope in SEARCH_SCOPES
        self.allowed = _model_matcher(key.models)
        self.rate = key.rate or policy.default_rate
        self.tokens = key.tokens or policy.default_tokens
        self.cap = key.max_concurrent or policy.limits.max_concurrent
        self.limited = bool(self.rate or self.tokens or self.cap)
        # the limiter's bucket names
        self.rate_id, self.tokens_id, self.slot_id = f"r:{key.id}", f"t:{key.id}", f"c:{key.id}"
        self.clamps = bool(key.max_num_ctx or key.max_num_predict or key.max_keep_alive_s is not None)


@dataclass
class Compiled:
    """A Snapshot turned into fast lookups; rebuilt on every reload, then read-only."""

    snapshot: Snapshot
    policy: Policy
    ip: IpPolicy
    trusted: IpPolicy | None  # None: no trusted proxies, the socket peer is the client
    blocked: frozenset[str]  # [security] blocked_endpoints: exact paths,
    blocked_prefixes: tuple[str, ...]  # and the prefixes of those ending in "*"
    cors: Cors
    checks: dict[str, BodyCheck]  # inspected route's name -> its body checks (validate.body_checks)
    key_in_body: bool  # [security] key_in_body: an api_key field is taken out of the forwarded body
    plans: dict[str, KeyPlan] = field(default_factory=dict)  # key id -> its plan
    model_allowed: dict[str, Callable[[str], bool]] = field(default_factory=dict)
    search: bool = False  # [search] is configured: the web search routes exist
    trust: dict[str, tuple[str, float]] = field(default_factory=dict)  # ip -> (key id, expires at)
    # Authorization values whose key this snapshot verified, with that key's plan: a client sends the same
    # one on every request, and the hash, the split and the plan's lookup are then skipped. Only matches
    # are kept (state and expiry are still checked each time); a reload starts afresh.
    verified: dict[bytes, KeyPlan] = field(default_factory=dict)
    # the exact paths a key without the admin scope may use (none blocked), so key policy tests only others
    open: frozenset[str] = frozenset()

    @classmethod
    def build(cls, snapshot: Snapshot, trusted_proxies: tuple[str, ...], search: bool = False) -> Compiled:
        policy = snapshot.policy
        assert policy is not None
        sec = policy.security
        plans = {k.id: KeyPlan(k, policy) for k in snapshot.keys.values()}
        inspected = (route.name for route in routes.EXACT.values() if route.inspect)
        compiled = cls(
            snapshot=snapshot,
            policy=policy,
            ip=IpPolicy(sec.ip_allow, sec.ip_deny),
            trusted=IpPolicy(trusted_proxies, ()) if trusted_proxies else None,
            blocked=frozenset(p for p in sec.blocked_endpoints if "*" not in p),
            blocked_prefixes=tuple(p[:-1] for p in sec.blocked_endpoints if p.endswith("*")),
            cors=Cors(sec.cors_origins),
            plans=plans,
            model_allowed={key_id: plan.allowed for key_id, plan in plans.items()},
            search=search,
            trust=dict(snapshot.trust) if sec.ip_trust_ttl_s else {},
            checks=body_checks(
                inspected, allowed_registries=sec.allowed_registries, allow_cloud=sec.allow_cloud_models
            ),
            key_in_body=sec.key_in_body,
        )
        compiled.open = frozenset(p for p, route in routes.EXACT.items() if not compiled.blocks(route, p))
        return compiled

    def blocks(self, route: Route, path: str) -> bool:
        """[security] blocked_endpoints refuses `path` to keys without the admin scope; model management
        is matched by its route's name, the rest by path."""
        target = route.name if route.model_admin else path
        return target in self.blocked or target.startswith(self.blocked_prefixes)

    def plan(self, key: KeyRecord) -> KeyPlan:
        """The plan of a key; one outside this snapshot (a request admitted before a reload) gets its own."""
        plan = self.plans.get(key.id)
        return plan if plan is not None and plan.key is key else KeyPlan(key, self.policy)


class Gate:
    """Runs the stages against the current Compiled snapshot; `swap()` replaces it atomically."""

    def __init__(
        self, compiled: Compiled, limiter: Limiter | None = None, auto: AutoModel | None = None
    ) -> None:
        self.limiter: Limiter = limiter or LocalLimiter()
        self.auto = auto
        # the proxy's metrics (fortress/metrics/), None while [metrics] is off: a 429 of the limits stage by
        # kind ("rate", "tokens", "concurrency"), and the /metrics answer for (client address, key scope)
        self.refused: Callable[[str], None] | None = None
        self.metrics: Callable[[str, str | None], LocalReply] | None = None
        self.swap(compiled)

    def swap(self, compiled: Compiled) -> None:
        self.c = compiled
        sec = compiled.policy.security
        # failed keys are counted in the limiter's store: shared across workers (and nodes) like limits
        self.failures = Lockout(self.limiter, sec.auth_fail_limit, sec.auth_fail_window_s, sec.auth_lockout_s)

    def head(
        self,
        method: bytes,
        path: str,
        query: str,
        authorization: bytes | None,
        x_api_key: bytes | None,
        client_ip: str,
        now: float,
        settled: bool = True,
    ) -> LocalReply | Admit | Recheck:
        c = self.c
        route = routes.classify(path)
        if not (route.plain and c.ip.known(client_ip)):  # one test for the usual route and address
            refused = self._route_refusal(route, path, client_ip)
            if refused is not None:
                return refused
        if not route.plain or method not in route.methods:
            if route.kind is PUBLIC:
                if method not in route.methods:
                    return error_reply(405, "method not allowed")
                if route is not routes.HEALTH:
                    return OK_ROOT
            elif route.kind is METRICS:
                token = presented_key(authorization, x_api_key, query, c.policy.security.key_in_query)
                return self._metrics(route, method, path, token, client_ip, now, settled)
            elif method not in route.methods:
                return error_reply(405, "method not allowed", route.shape)
            elif route is routes.AUTH and not c.policy.security.ip_trust_ttl_s:
                return error_reply(
                    404, "IP trust sessions are off on this gateway ([security] ip_trust_ttl_s)"
                )

        verified = c.verified.get(authorization)  # type: ignore[arg-type]  # never holds None
        token = None
        if verified is None:
            token = presented_key(authorization, x_api_key, query, c.policy.security.key_in_query)
            # /health is public, even when locked out; detail needs a key
            if token is None and route is routes.HEALTH:
                record = self._trusted(client_ip, now)
                usable = self._usable(record, now, route.shape, settled=True) if record is not None else None
                return Admit(route, usable if isinstance(usable, KeyRecord) else None)
        locked = self.failures.locked(client_ip, now)
        if locked:
            return _locked_out(locked, route.shape)
        if verified is not None:
            if verified.until > now:  # active and not expired (the usual case: _usable asks the same)
                return self._key_policy(route, verified, path, now)
            key = self._usable(verified.key, now, route.shape, settled)
        elif token is not None:
            key = self._authenticate(token, client_ip, now, route.shape, settled)
            if isinstance(key, KeyRecord) and authorization and bearer_key(authorization) == token:
                if len(c.verified) >= VERIFIED_MAX:
                    c.verified.clear()
                c.verified[authorization] = c.plan(key)
        elif c.policy.security.key_in_body and route.inspect:
            return Admit(route, None, key_in_body=True)
        else:
            # POST /auth needs the key itself: a trusted address cannot extend its own session
            trusting = not (route is routes.AUTH and method == b"POST")
            key = self._keyless(client_ip, now, route.shape, settled, trusting)
        if not isinstance(key, KeyRecord):
            return key
        return self._key_policy(route, c.plan(key), path, now)

    def _key_policy(self, route: Route, plan: KeyPlan, path: str, now: float) -> KeyRefusal | Admit:
        """Key policy (stage 6), then rate limits (stage 7); a refusal names the key (KeyRefusal)."""
        if not plan.admin and path not in self.c.open and self.c.blocks(route, path):
            if route.model_admin:
                message = f"forbidden: {route.name} needs a key with the admin scope"
            else:
                message = f"forbidden: {path} is blocked by policy"
            return _refusal(plan.key, 403, message, route.shape)
        if not route.plain:
            if route.kind is SEARCH and not plan.search:
                message = f"forbidden: {route.name} needs a key with the search scope"
                return _refusal(plan.key, 403, message, route.shape)
            if route is routes.BLOBS:
                digest = blob_digest_from_path(path[len("/api/blobs/") :])
                if not isinstance(digest, str):
                    return _refusal(plan.key, digest.status, digest.message, route.shape)
        if plan.limited:
            return self._limit(route, plan, route.shape, now)
        return Admit(route, plan.key, plan=plan)

    def _metrics(
        self,
        route: Route,
        method: bytes,
        path: str,
        token: str | None,
        client_ip: str,
        now: float,
        settled: bool,
    ) -> LocalReply | Recheck:
        """GET /metrics: a key, when one is presented, is checked as on any route, but no limit is charged
        (a scrape must not use up a key's rate); who may read is the hook's decision on address and scope."""
        serve = self.metrics
        if serve is None:
            return error_reply(404, f"path {path} not found")
        if method not in route.methods:
            return error_reply(405, "method not allowed")
        if token is None:
            return serve(client_ip, None)
        locked = self.failures.locked(client_ip, now)
        if locked:
            return _locked_out(locked, False)
        key = self._authenticate(token, client_ip, now, False, settled)
        return serve(client_ip, key.scope) if isinstance(key, KeyRecord) else key

    def _authenticate(
        self, token: str, client_ip: str, now: float, openai: int, settled: bool
    ) -> KeyRecord | LocalReply | Recheck:
        parts = keys.split(token)
        record = self.c.snapshot.keys.get(parts[0]) if parts else None
        # hash and compare even when the id is unknown: the two failures take the same time
        ok = keys.matches(parts[1] if parts else token, record.secret_hash if record else None)
        if not ok or record is None:
            if parts is not None and not settled:
                return RECHECK  # a key shaped like ours: it may be newer than this snapshot
            self.failures.failure(client_ip, now)
            return error_reply(401, "invalid API key", openai)
        return self._usable(record, now, openai, settled)

    def _usable(
        self, record: KeyRecord, now: float, openai: int, settled: bool
    ) -> KeyRecord | LocalReply | Recheck:
        if record.state != "active":
            if record.state == "disabled" and not settled:
                return RECHECK  # it may have been enabled a moment ago
            return error_reply(401, f"API key is {record.state}", openai)
        if record.expires_at is not None and record.expires_at <= now:
            return error_reply(401, "API key has expired", openai)
        return record

    def _keyless(
        self, client_ip: str, now: float, openai: int, settled: bool, trusting: bool = True
    ) -> KeyRecord | LocalReply | Recheck:
        """No key presented: the key this address is trusted as (POST /auth), else 401."""
        record = self._trusted(client_ip, now) if trusting else None
        if record is not None:
            return self._usable(record, now, openai, settled)
        if trusting and self.c.policy.security.ip_trust_ttl_s and not settled:
            return RECHECK  # the address may have been trusted a moment ago, through another worker
        return error_reply(401, "missing API key: send Authorization: Bearer <key>", openai)

    def _trusted(self, client_ip: str, now: float) -> KeyRecord | None:
        """The key of this address's live IP trust session, whatever its state; None without one."""
        c = self.c
        trusted = c.trust.get(client_ip) if c.trust else None
        if trusted is None or trusted[1] <= now:
            return None
        return c.snapshot.keys.get(trusted[0])

    def body_key(
        self, admit: Admit, raw: bytes, client_ip: str, now: float, settled: bool = True
    ) -> LocalReply | Admit | Recheck:
        """Authentication deferred to the body (`key_in_body`, no key in the head): its `api_key` field,
        else the address's trust session, else 401; then key policy and limits as in head()."""
        route = admit.route
        openai = route.shape
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            doc = None
        token = doc.get("api_key") if isinstance(doc, dict) else None
        if isinstance(token, str) and token:
            key = self._authenticate(token, client_ip, now, openai, settled)
        else:
            key = self._keyless(client_ip, now, openai, settled)
        if not isinstance(key, KeyRecord):
            return key
        done = self._key_policy(route, self.c.plan(key), route.name, now)
        if isinstance(done, Admit):
            admit.key, admit.rate_headers, admit.slot, admit.key_in_body, admit.plan = (
                key,
                done.rate_headers,
                done.slot,
                False,
                done.plan,
            )
            return admit
        return done

    def preflight(
        self, path: str, origin: bytes | None, requested: bytes | None, client_ip: str
    ) -> LocalReply:
        """OPTIONS: 204 without a key, with CORS's grant for an allowed origin (pipeline/cors.py)."""
        route = routes.classify(path)
        refused = self._route_refusal(route, path, client_ip)
        if refused is not None:
            return refused
        return self.c.cors.preflight(origin, route.methods, requested)

    def _route_refusal(self, route: Route, path: str, client_ip: str) -> LocalReply | None:
        """Stages 3-4 once the route class is known: the IP policy, then a refusal for unknown and
        never-forwarded routes."""
        if not self.c.ip.allows(client_ip):
            return error_reply(403, "forbidden: your address is not allowed", route.shape, close=True)
        kind = route.kind
        if kind is UNKNOWN or (kind is SEARCH and not self.c.search):
            return error_reply(404, f"path {path} not found", route.shape)
        if kind is NEVER:
            message = f"forbidden: {route.name} is not available through this gateway"
            return error_reply(403, message, route.shape)
        return None

    def _limit(self, route: Route, plan: KeyPlan, openai: int, now: float) -> KeyRefusal | Admit:
        """Tokens, concurrency, then the request rate, so only admitted requests count against the rate."""
        key, rate, tokens, cap = plan.key, plan.rate, plan.tokens, plan.cap
        if tokens is not None:
            d = self.limiter.peek(plan.tokens_id, tokens[0], tokens[1], now)
            if not d.allowed:
                if self.refused is not None:
                    self.refused("tokens")
                return self._over(plan, "token limit exceeded for this key", openai, d.retry_after_s, now)
        slot = None
        if cap:
            slot = plan.slot_id
            if not self.limiter.acquire_slot(slot, cap):
                if self.refused is not None:
                    self.refused("concurrency")
                message = f"too many concurrent requests for this key (max {cap})"
                return self._over(plan, message, openai, 1.0, now)
        headers: Headers = ()
        if rate is not None:
            d = self.limiter.hit(plan.rate_id, rate[0], rate[1], now)
            headers = _rate_headers(d)
            if not d.allowed:
                if slot is not None:
                    self.limiter.release_slot(slot)
                if self.refused is not None:
                    self.refused("rate")
                headers += _retry(d.retry_after_s)
                return _refusal(key, 429, "rate limit exceeded for this key", openai, headers)
        return Admit(route, key, headers, slot=slot, plan=plan)

    def _over(self, plan: KeyPlan, message: str, openai: int, retry_s: float, now: float) -> KeyRefusal:
        """A 429 of the token or concurrency limit: with the rate's state, read but not charged, as every
        answer of a rate-limited key carries it."""
        rate = plan.rate
        headers = _rate_headers(self.limiter.peek(plan.rate_id, rate[0], rate[1], now)) if rate else ()
        return _refusal(plan.key, 429, message, openai, headers + _retry(retry_s))

    def finish(self, admit: Admit, tokens: int, now: float) -> None:
        """After a request: free its concurrency slot and charge its tokens."""
        if admit.slot is not None:
            self.limiter.release_slot(admit.slot)
            admit.slot = None
        key = admit.key
        if tokens and key is not None:
            plan = admit.plan or self.c.plan(key)  # the limits the request was admitted under
            if plan.tokens is not None:
                self.limiter.add(plan.tokens_id, tokens, plan.tokens[1], now)

    def body(self, admit: Admit, raw: bytes) -> LocalReply | Forward:
        """Stage 8 for JSON routes: parse once (as Ollama will), validate, resolve "auto" or check the
        model, clamp."""
        route = admit.route
        body = jsonbody.parse(raw)
        if isinstance(body, Reject):
            return error_reply(body.status, body.message, route.shape)
        name = route.name
        model = body.get("model") or body.get("name")
        if name == "/api/copy":
            model = body.get("source")
        if model is not None and not isinstance(model, str):
            return error_reply(400, "model must be a string", route.shape)
        c = self.c
        check = c.checks.get(name)
        reject = None if check is None else check(body)
        if reject is not None:
            return error_reply(reject.status, reject.message, route.shape)
        key = admit.key
        plan = admit.plan or (c.plan(key) if key is not None else None)
        allowed = plan.allowed if plan is not None else _all
        picked = None
        if model:
            if "auto" in model.lower() and self.auto is not None:
                picked = self.auto.pick(route, body, key, allowed)
                if isinstance(picked, LocalReply):
                    return picked
            if picked is None and allowed is not _all and not allowed(model):  # _all: no model list
                return error_reply(403, f"forbidden: this key may not use model '{model}'", route.shape)
        changed = drop_insecure(name, body)
        if picked is not None:  # model "auto": the chosen one goes upstream, is accounted and named
            model, header = picked  # type: ignore[misc]
            body["model"] = model
            changed = True
            admit.rate_headers += (header,)
        if plan is not None and plan.clamps:
            limits = plan.key
            changed |= clamp_options(
                body,
                path=name,
                max_num_ctx=limits.max_num_ctx,
                max_num_predict=limits.max_num_predict,
                max_keep_alive_s=limits.max_keep_alive_s,
            )
        if c.key_in_body and "api_key" in body:
            del body["api_key"]
            changed = True
        admit.model = model
        return _new(Forward, (jsonbody.encode(body) if changed else raw, model, body))


def _refusal(key: KeyRecord, status: int, message: str, openai: int, headers: Headers = ()) -> KeyRefusal:
    reply = error_reply(status, message, openai, headers)
    return KeyRefusal(reply.status, reply.body, reply.content_type, reply.headers, reply.close, key)


def _locked_out(locked: float, openai: int) -> LocalReply:
    return error_reply(
        429,
        "too many failed authentication attempts; try again later",
        openai,
        headers=((b"Retry-After", str(int(locked) + 1).encode()),),
    )


def _all(_name: str) -> bool:
    return True


def _rate_headers(d: Decision) -> Headers:
    return (
        (b"X-RateLimit-Limit", str(d.limit).encode()),
        (b"X-RateLimit-Remaining", str(d.remaining).encode()),
        (b"X-RateLimit-Reset", str(max(1, math.ceil(d.reset_s))).encode()),
    )


def _retry(seconds: float) -> Headers:
    """When to retry: whole seconds rounded up (a retry then succeeds), and exact milliseconds in
    `Retry-After-Ms`, which the openai SDKs prefer: they sleep the real time to the next free slot."""
    return (
        (b"Retry-After", str(max(1, math.ceil(seconds))).encode()),
        (b"Retry-After-Ms", str(max(1, math.ceil(seconds * 1000))).encode()),
    )
