"""The Gate's two metrics hooks, driven directly (the stages are pure): the /metrics branch and the limits'
refusals. The hooks given here are plain recorders of what the gate passed them."""

from __future__ import annotations

import dataclasses

import pytest

from fortress import keys
from fortress.config import Config
from fortress.http.replies import LocalReply
from fortress.pipeline.chain import Admit, Compiled, Gate
from fortress.state.snapshot import KeyRecord, Policy, Snapshot

SERVED = LocalReply(200, b"# metrics\n", content_type=b"text/plain")
IP = "192.0.2.10"


class Keys:
    def __init__(self) -> None:
        self.records: dict[str, KeyRecord] = {}
        self.tokens: dict[str, str] = {}

    def add(self, name: str, **fields: object) -> str:
        token, key_id, secret_hash = keys.generate()
        self.records[key_id] = KeyRecord(key_id, name, secret_hash, **fields)  # type: ignore[arg-type]
        return token


def _gate(ring: Keys, fail_limit: int = 50) -> tuple[Gate, list[tuple[str, str | None]], list[str]]:
    cfg = Config()
    cfg = dataclasses.replace(cfg, security=dataclasses.replace(cfg.security, auth_fail_limit=fail_limit))
    snapshot = Snapshot(1, ring.records, (), Policy.build(cfg, {}))
    gate = Gate(Compiled.build(snapshot, ()))
    asked: list[tuple[str, str | None]] = []
    refused: list[str] = []

    def serve(client_ip: str, scope: str | None) -> LocalReply:
        asked.append((client_ip, scope))
        return SERVED

    gate.metrics = serve
    gate.refused = refused.append
    return gate, asked, refused


def _scrape(gate: Gate, token: str | None = None, method: bytes = b"GET", now: float = 1000.0) -> LocalReply:
    auth = f"Bearer {token}".encode() if token else None
    reply = gate.head(method, "/metrics", "", auth, None, IP, now)
    assert isinstance(reply, LocalReply)
    return reply


def test_the_hook_gets_the_address_and_the_scope_of_a_valid_key() -> None:
    ring = Keys()
    admin, user = ring.add("root", scope="admin"), ring.add("alice")
    gate, asked, _ = _gate(ring)
    assert _scrape(gate) is SERVED
    assert _scrape(gate, admin) is SERVED
    assert _scrape(gate, user) is SERVED
    assert _scrape(gate, method=b"HEAD") is SERVED
    assert asked == [(IP, None), (IP, "admin"), (IP, "user"), (IP, None)]
    assert _scrape(gate, method=b"POST").status == 405


def test_without_the_hook_the_route_does_not_exist() -> None:
    ring = Keys()
    admin = ring.add("root", scope="admin")
    gate, _, _ = _gate(ring)
    gate.metrics = None
    for token in (None, admin):
        reply = _scrape(gate, token)
        assert reply.status == 404 and b"/metrics not found" in reply.body


def test_a_bad_key_is_refused_and_counted_as_a_failed_attempt() -> None:
    ring = Keys()
    admin = ring.add("root", scope="admin")
    gate, asked, _ = _gate(ring, fail_limit=3)
    wrong = admin[:-4] + "abcd"
    assert [_scrape(gate, wrong).status for _ in range(3)] == [401, 401, 401]
    locked = _scrape(gate, admin)  # the address is locked out now, even with a good key
    assert locked.status == 429 and dict(locked.headers)[b"Retry-After"]
    assert asked == []
    assert _scrape(gate) is SERVED  # no key: only the address decides, in the hook


def test_scrapes_charge_no_limit_and_refusals_reach_the_hook_by_kind() -> None:
    ring = Keys()
    rated = ring.add("alice", rate=(1, 60))
    capped = ring.add("bob", max_concurrent=1)
    metered = ring.add("carol", tokens=(10, 60))
    gate, _, refused = _gate(ring)

    def tags(token: str, now: float = 1000.0) -> LocalReply | Admit:
        return gate.head(b"GET", "/api/tags", "", f"Bearer {token}".encode(), None, IP, now)

    for _ in range(5):
        assert _scrape(gate, rated) is SERVED
    assert isinstance(tags(rated), Admit)  # the key's one request was left whole
    assert isinstance(tags(rated), LocalReply)
    held = tags(capped)
    assert isinstance(held, Admit)
    assert isinstance(tags(capped), LocalReply)
    gate.finish(held, 0, 1000.0)
    first = tags(metered)
    assert isinstance(first, Admit)
    gate.finish(first, 11, 1000.0)
    assert isinstance(tags(metered), LocalReply)
    assert refused == ["rate", "concurrency", "tokens"]


@pytest.mark.parametrize("path", ["/metrics/", "/metrics/x", "/api/metrics"])
def test_only_the_exact_path_is_the_metrics_route(path: str) -> None:
    gate, asked, _ = _gate(Keys())
    reply = gate.head(b"GET", path, "", None, None, IP, 1000.0)
    assert isinstance(reply, LocalReply) and reply.status == 404 and asked == []
