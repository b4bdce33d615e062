"""The ordered stages of the hot path (DESIGN §2, stages 2-8), free of sockets.

Contract: `Gate.head()` runs once per request on the parsed head and answers either a LocalReply
(Fortress answers and the request goes no further) or an Admit (carry on). Cheap rejects come first:
route class, IP policy, brute-force lockout, key, key policy, rate limits. `Gate.body()` runs only for
routes whose JSON body must be read: it parses once, the way the backend will (`jsonbody`), runs the
Ollama-specific validation, resolves `"model": "auto"` (through the injected `AutoModel`,
routing/auto.py) or checks the model against the key's allow-list, clamps, and answers a LocalReply or
the bytes to forward.
Stateful parts (limiter, failure counters, the auto choice) are injected, the clock is passed in: tests
drive it directly.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fortress import keys
from fortress.http.replies import LocalReply, error_reply
from fortress.pipeline import jsonbody, routes
from fortress.pipeline.bruteforce import Lockout
from fortress.pipeline.ip_policy import IpPolicy
from fortress.pipeline.limits import Limiter, LocalLimiter
from fortress.pipeline.routes import Kind, Route
from fortress.pipeline.validate import (
    Reject,
    blob_digest_from_path,
    clamp_options,
    drop_insecure,
    validate_body,
)
from fortress.state.snapshot import KeyRecord, Policy, Snapshot

OK_ROOT = LocalReply(200, b"Ollama is running", content_type=b"text/plain; charset=utf-8")
OK_HEALTH = LocalReply(200, b'{"status":"ok"}')
SEARCH_SCOPES = ("search", "admin")  # key scopes that may use /api/web_search and /api/web_fetch
Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(slots=True)
class Admit:
    """A request that passed the head stages."""

    route: Route
    key: KeyRecord | None
    rate_headers: Headers = ()  # added to every answer: rate-limit state, and X-Fortress-Model once chosen
    model: str | None = None
    slot: str | None = None  # the concurrency bucket to release when the request ends


@dataclass(frozen=True, slots=True)
class Forward:
    """The outcome of the body stage: what to send upstream."""

    body: bytes
    model: str | None
    stream: bool
    doc: dict | None = None  # the parsed body, for a provider that needs its own model name


class AutoModel(Protocol):
    """Model "auto" (routing/auto.py, AutoChooser): None when the request does not ask for it, else the
    model chosen with its X-Fortress-Model header, or the refusal to answer."""

    def pick(
        self, route: Route, body: dict[str, Any], key: KeyRecord | None, allowed: Callable[[str], bool]
    ) -> tuple[str, tuple[bytes, bytes]] | LocalReply | None: ...


def _model_matcher(globs: tuple[str, ...]) -> Callable[[str], bool]:
    if not globs:
        return lambda _name: True
    names = [g.strip().lower() for g in globs if g.strip()]
    pattern = re.compile("|".join(fnmatch.translate(n) for n in names))
    # "llama3" allows "llama3:latest" too, as Ollama resolves the default tag
    return lambda name: bool(pattern.match(name.lower()) or pattern.match(_without_latest(name.lower())))


def _without_latest(name: str) -> str:
    return name[:-7] if name.endswith(":latest") else name


def _blocked_matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    exact = frozenset(p for p in patterns if "*" not in p)
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return lambda path: path in exact or (bool(prefixes) and path.startswith(prefixes))


@dataclass
class Compiled:
    """A Snapshot turned into fast lookups; rebuilt on every reload, then read-only."""

    snapshot: Snapshot
    policy: Policy
    ip: IpPolicy
    trusted: IpPolicy | None  # None: no trusted proxies, the socket peer is the client
    blocked: Callable[[str], bool]
    model_allowed: dict[str, Callable[[str], bool]] = field(default_factory=dict)
    search: bool = False  # [search] is configured: the web search routes exist

    @classmethod
    def build(cls, snapshot: Snapshot, trusted_proxies: tuple[str, ...], search: bool = False) -> Compiled:
        policy = snapshot.policy
        assert policy is not None
        sec = policy.security
        return cls(
            snapshot=snapshot,
            policy=policy,
            ip=IpPolicy(sec.ip_allow, sec.ip_deny),
            trusted=IpPolicy(trusted_proxies, ()) if trusted_proxies else None,
            blocked=_blocked_matcher(sec.blocked_endpoints),
            model_allowed={k.id: _model_matcher(k.models) for k in snapshot.keys.values()},
            search=search,
        )


def _presented_key(auth: bytes | None, x_api_key: bytes | None, query: str, in_query: bool) -> str | None:
    if auth is not None:
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer":
            return token.strip().decode("latin-1")
    if x_api_key is not None:
        return x_api_key.strip().decode("latin-1")
    if in_query and "api_key=" in query:
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "api_key":
                return value
    return None


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
    ) -> LocalReply | Admit:
        route = routes.classify(path)
        openai = route.shape or path.startswith("/v1/")  # the error shape (replies.Shape)
        c = self.c
        if not c.ip.allows(client_ip):
            return error_reply(403, "forbidden: your address is not allowed", openai, close=True)
        if route.kind is Kind.PUBLIC:
            if method not in route.methods:
                return error_reply(405, "method not allowed")
            return OK_ROOT if route.name == "/" else OK_HEALTH
        if route.kind is Kind.METRICS:
            token = _presented_key(authorization, x_api_key, query, c.policy.security.key_in_query)
            return self._metrics(route, method, path, token, client_ip, now)
        if route.kind is Kind.UNKNOWN or (route.kind is Kind.SEARCH and not c.search):
            return error_reply(404, f"path {path} not found", openai)
        if route.kind is Kind.NEVER:
            return error_reply(403, f"forbidden: {route.name} is not available through this gateway", openai)
        if method not in route.methods:
            return error_reply(405, "method not allowed", openai)

        locked = self.failures.locked(client_ip, now)
        if locked:
            return _locked_out(locked, openai)
        token = _presented_key(authorization, x_api_key, query, c.policy.security.key_in_query)
        if token is None:
            return error_reply(401, "missing API key: send Authorization: Bearer <key>", openai)
        key = self._authenticate(token, client_ip, now, openai)
        if isinstance(key, LocalReply):
            return key

        if route.model_admin and key.scope != "admin" and c.blocked(route.name):
            return error_reply(403, f"forbidden: {route.name} needs a key with the admin scope", openai)
        if not route.model_admin and key.scope != "admin" and c.blocked(path):
            return error_reply(403, f"forbidden: {path} is blocked by policy", openai)
        if route.kind is Kind.SEARCH and key.scope not in SEARCH_SCOPES:
            return error_reply(403, f"forbidden: {route.name} needs a key with the search scope", openai)
        if route is routes.BLOBS:
            digest = blob_digest_from_path(path[len("/api/blobs/") :])
            if not isinstance(digest, str):
                return error_reply(digest.status, digest.message, openai)
        return self._limit(route, key, openai, now)

    def _metrics(
        self, route: Route, method: bytes, path: str, token: str | None, client_ip: str, now: float
    ) -> LocalReply:
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
        key = self._authenticate(token, client_ip, now, False)
        return key if isinstance(key, LocalReply) else serve(client_ip, key.scope)

    def _authenticate(self, token: str, client_ip: str, now: float, openai: bool) -> KeyRecord | LocalReply:
        parts = keys.split(token)
        record = self.c.snapshot.keys.get(parts[0]) if parts else None
        # hash and compare even when the id is unknown: the two failures take the same time
        ok = keys.matches(parts[1] if parts else token, record.secret_hash if record else None)
        if not ok or record is None:
            self.failures.failure(client_ip, now)
            return error_reply(401, "invalid API key", openai)
        if record.state != "active":
            return error_reply(401, f"API key is {record.state}", openai)
        if record.expires_at is not None and record.expires_at <= now:
            return error_reply(401, "API key has expired", openai)
        return record

    def _limit(self, route: Route, key: KeyRecord, openai: bool, now: float) -> LocalReply | Admit:
        """Tokens, concurrency, then the request rate, so only admitted requests count against the rate."""
        policy = self.c.policy
        tokens = key.tokens or policy.default_tokens
        if tokens is not None:
            d = self.limiter.peek(f"t:{key.id}", tokens[0], tokens[1], now)
            if not d.allowed:
                if self.refused is not None:
                    self.refused("tokens")
                return error_reply(
                    429, "token limit exceeded for this key", openai, headers=_retry(d.retry_after_s)
                )
        slot = None
        cap = key.max_concurrent or policy.limits.max_concurrent
        if cap:
            slot = f"c:{key.id}"
            if not self.limiter.acquire_slot(slot, cap):
                if self.refused is not None:
                    self.refused("concurrency")
                return error_reply(
                    429, f"too many concurrent requests for this key (max {cap})", openai, headers=_retry(1.0)
                )
        headers: Headers = ()
        rate = key.rate or policy.default_rate
        if rate is not None:
            d = self.limiter.hit(f"r:{key.id}", rate[0], rate[1], now)
            headers = (
                (b"X-RateLimit-Limit", str(d.limit).encode()),
                (b"X-RateLimit-Remaining", str(d.remaining).encode()),
                (b"X-RateLimit-Reset", str(max(1, math.ceil(d.reset_s))).encode()),
            )
            if not d.allowed:
                if slot is not None:
                    self.limiter.release_slot(slot)
                if self.refused is not None:
                    self.refused("rate")
                headers += _retry(d.retry_after_s)
                return error_reply(429, "rate limit exceeded for this key", openai, headers=headers)
        return Admit(route, key, headers, slot=slot)

    def finish(self, admit: Admit, tokens: int, now: float) -> None:
        """After a request: free its concurrency slot and charge its tokens."""
        if admit.slot is not None:
            self.limiter.release_slot(admit.slot)
            admit.slot = None
        key = admit.key
        if tokens and key is not None:
            window = key.tokens or self.c.policy.default_tokens
            if window is not None:
                self.limiter.add(f"t:{key.id}", tokens, window[1], now)

    def body(self, admit: Admit, raw: bytes) -> LocalReply | Forward:
        """Stage 8 for JSON routes: parse once (as Ollama will), validate, resolve "auto" or check the
        model, clamp."""
        openai = admit.route.shape
        body = jsonbody.parse(raw)
        if isinstance(body, Reject):
            return error_reply(body.status, body.message, openai)
        name = admit.route.name
        model = body.get("model") or body.get("name")
        if name == "/api/copy":
            model = body.get("source")
        if model is not None and not isinstance(model, str):
            return error_reply(400, "model must be a string", openai)
        sec = self.c.policy.security
        reject = validate_body(
            name, body, allowed_registries=sec.allowed_registries, allow_cloud=sec.allow_cloud_models
        )
        if reject is not None:
            return error_reply(reject.status, reject.message, openai)
        key = admit.key
        allowed = self.c.model_allowed.get(key.id, _all) if key is not None else _all
        picked = self.auto.pick(admit.route, body, key, allowed) if model and self.auto is not None else None
        if picked is None:
            if model and not allowed(model):
                return error_reply(403, f"forbidden: this key may not use model '{model}'", openai)
        elif isinstance(picked, LocalReply):
            return picked
        changed = drop_insecure(name, body)
        if picked is not None:  # model "auto": the chosen one goes upstream, is accounted and named
            model, header = picked
            body["model"] = model
            changed = True
            admit.rate_headers += (header,)
        if key is not None and (key.max_num_ctx or key.max_num_predict or key.max_keep_alive_s is not None):
            changed |= clamp_options(
                body,
                path=name,
                max_num_ctx=key.max_num_ctx,
                max_num_predict=key.max_num_predict,
                max_keep_alive_s=key.max_keep_alive_s,
            )
        if sec.key_in_body and "api_key" in body:
            del body["api_key"]
            changed = True
        stream = body.get("stream")
        streaming = stream is not False if admit.route.kind is Kind.OLLAMA else stream is True
        admit.model = model
        return Forward(json.dumps(body).encode() if changed else raw, model, streaming, body)


def _locked_out(locked: float, openai: bool) -> LocalReply:
    return error_reply(
        429,
        "too many failed authentication attempts; try again later",
        openai,
        headers=((b"Retry-After", str(int(locked) + 1).encode()),),
    )


def _all(_name: str) -> bool:
    return True


def _retry(seconds: float) -> Headers:
    """When to retry: whole seconds rounded up (a retry then succeeds), and exact milliseconds in
    `Retry-After-Ms`, which the openai SDKs prefer: they sleep the real time to the next free slot."""
    return (
        (b"Retry-After", str(max(1, math.ceil(seconds))).encode()),
        (b"Retry-After-Ms", str(max(1, math.ceil(seconds * 1000))).encode()),
    )
