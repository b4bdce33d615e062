"""The gate's key decisions without sockets: RECHECK before a refusal a newer snapshot may overturn
(and only the settled refusal counts toward the lockout), IP trust sessions, /health and /auth."""

from __future__ import annotations

import dataclasses
import json

from fortress import keys
from fortress.config import Config
from fortress.http.replies import LocalReply
from fortress.pipeline import routes
from fortress.pipeline.chain import RECHECK, Admit, Compiled, Gate, Recheck
from fortress.state.snapshot import KeyRecord, Policy, Snapshot

NOW = 1_000_000.0
IP = "192.0.2.7"


def issue(scope: str = "user", state: str = "active") -> tuple[str, KeyRecord]:
    full, key_id, secret_hash = keys.generate()
    return full, KeyRecord(id=key_id, user="u", secret_hash=secret_hash, scope=scope, state=state)


def gate(
    records: list[KeyRecord], trust: dict[str, tuple[str, float]] | None = None, **security: object
) -> Gate:
    cfg = Config()
    cfg = dataclasses.replace(cfg, security=dataclasses.replace(cfg.security, **security))
    snapshot = Snapshot(
        version=1, keys={r.id: r for r in records}, policy=Policy.build(cfg, {}), trust=trust or {}
    )
    return Gate(Compiled.build(snapshot, ()))


def head(
    g: Gate, path: str = "/api/tags", key: str | None = None, settled: bool = False, method: bytes = b"GET"
) -> LocalReply | Admit | Recheck:
    auth = f"Bearer {key}".encode() if key else None
    return g.head(method, path, "", auth, None, IP, NOW, settled)


def status(result: object) -> int:
    assert isinstance(result, LocalReply), result
    return result.status


def test_a_key_shaped_refusal_is_rechecked_first_and_only_then_counted() -> None:
    full, record = issue()
    g = gate([record], auth_fail_limit=2)
    unknown = "fk_zzzzzzzz_" + "Z" * 43
    wrong = full[:-3] + "zzz"
    for token in (unknown, wrong):
        for _ in range(5):
            assert head(g, key=token) is RECHECK  # never counted: a newer snapshot may know it
    assert g.failures.locked(IP, NOW) == 0
    assert status(head(g, key=unknown, settled=True)) == 401
    assert status(head(g, key=wrong, settled=True)) == 401
    assert status(head(g, key=full)) == 429  # two settled failures: locked


def test_what_no_snapshot_can_change_is_refused_at_once() -> None:
    full, record = issue(state="revoked")
    g = gate([record])
    assert status(head(g, key=full)) == 401  # revoked is final
    assert status(head(g, key="not-a-key")) == 401  # not shaped like a key
    assert status(head(g)) == 401  # no key and no IP trust: nothing to wait for


def test_a_disabled_key_is_rechecked_an_active_one_admitted() -> None:
    full, disabled = issue(state="disabled")
    g = gate([disabled])
    assert head(g, key=full) is RECHECK
    assert status(head(g, key=full, settled=True)) == 401
    ok_full, active = issue()
    assert isinstance(head(gate([active]), key=ok_full), Admit)


def test_a_trusted_address_is_served_as_its_key() -> None:
    _, record = issue()
    g = gate([record], {IP: (record.id, NOW + 60)}, ip_trust_ttl_s=600)
    admitted = head(g)
    assert isinstance(admitted, Admit) and admitted.key == record
    assert status(head(g, "/auth", method=b"POST", settled=True)) == 401  # starting one needs the key
    ended = head(g, "/auth", method=b"DELETE")
    assert isinstance(ended, Admit) and ended.key == record  # ending one does not


def test_an_untrusted_or_expired_address_is_rechecked_while_trust_is_on() -> None:
    _, record = issue()
    g = gate([record], {IP: (record.id, NOW - 1)}, ip_trust_ttl_s=600)
    assert head(g) is RECHECK
    assert status(head(g, settled=True)) == 401
    off = gate([record], {IP: (record.id, NOW + 60)})  # trust off: sessions are ignored
    assert status(head(off)) == 401


def test_auth_is_unknown_while_trust_is_off() -> None:
    full, record = issue()
    reply = head(gate([record]), "/auth", key=full, method=b"POST")
    assert status(reply) == 404 and b"ip_trust_ttl_s" in reply.body


def test_health_is_public_and_detail_follows_the_key() -> None:
    full, admin = issue(scope="admin")
    g = gate([admin], auth_fail_limit=1)
    public = head(g, "/health")
    assert isinstance(public, Admit) and public.route is routes.HEALTH and public.key is None
    keyed = head(g, "/health", key=full)
    assert isinstance(keyed, Admit) and keyed.key == admin
    assert status(head(g, "/api/tags", key="fk_zzzzzzzz_" + "Z" * 43, settled=True)) == 401  # locks
    assert status(head(g, "/api/tags", key=full)) == 429
    still = head(g, "/health")
    assert isinstance(still, Admit) and still.key is None  # a locked-out address still gets /health


def test_preflight_needs_no_key_and_refuses_unknown_routes() -> None:
    g = gate([], cors_origins=("http://app.example",))
    reply = g.preflight("/api/chat", b"http://app.example", None, IP)
    assert reply.status == 204 and dict(reply.headers)[b"Access-Control-Allow-Methods"] == b"OPTIONS, POST"
    assert g.preflight("/nowhere", b"http://app.example", None, IP).status == 404
    assert g.preflight("/api/me", b"http://app.example", None, IP).status == 403


def test_a_verified_authorization_is_remembered_only_while_it_stays_true() -> None:
    """Compiled.verified skips the hash for an Authorization value this snapshot already matched; the key's
    state and expiry are still checked every time, a reload forgets it, and failures are never kept."""
    full, record = issue()
    expiring = dataclasses.replace(record, expires_at=NOW + 10)
    g = gate([expiring])
    auth = f"Bearer {full}".encode()
    assert isinstance(head(g, key=full), Admit)
    assert {value: plan.key for value, plan in g.c.verified.items()} == {auth: expiring}
    assert isinstance(head(g, key=full), Admit)  # from the memo
    later = g.head(b"GET", "/api/tags", "", auth, None, IP, NOW + 11, True)
    assert status(later) == 401 and b"expired" in later.body  # type: ignore[union-attr]
    disabled = dataclasses.replace(record, state="disabled")
    g.swap(Compiled.build(Snapshot(version=2, keys={record.id: disabled}, policy=g.c.policy), ()))
    assert g.c.verified == {}
    assert status(head(g, key=full, settled=True)) == 401  # the new snapshot decides, not the memo
    wrong = full[:-3] + "zzz"
    assert status(head(g, key=wrong, settled=True)) == 401
    assert g.c.verified == {}  # refusals are never remembered


def test_the_memo_is_keyed_by_the_authorization_header_alone() -> None:
    """A key in X-API-Key (or the query) behind a non-key Authorization value is checked, not remembered
    under that Authorization value, which would otherwise admit it without any key."""
    full, record = issue()
    g = gate([record])
    assert isinstance(
        g.head(b"GET", "/api/tags", "", b"Basic Zm9vOmJhcg==", full.encode(), IP, NOW, True), Admit
    )
    assert g.c.verified == {}
    assert status(g.head(b"GET", "/api/tags", "", b"Basic Zm9vOmJhcg==", None, IP, NOW, True)) == 401


def test_refusals_take_the_shape_of_the_api_the_path_belongs_to() -> None:
    """Unknown paths under /v1/ answer in OpenAI's error shape, others in Ollama's, whatever refuses them."""
    _, record = issue()
    for denied in (False, True):
        g = gate([record], ip_deny=(IP,) if denied else ())
        for path, openai in (("/v1/no-such-route", True), ("/api/no-such-route", False), ("/nope", False)):
            body = json.loads(status_body(head(g, path=path), 403 if denied else 404))
            assert isinstance(body["error"], dict) is openai, (path, body)


def status_body(result: object, expected: int) -> bytes:
    assert isinstance(result, LocalReply) and result.status == expected, result
    return result.body
