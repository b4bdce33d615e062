"""Pure admin logic: login throttle, TLS pair checks, dashboard rates, date ranges, pulls."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from admin import tlsinfo
from admin.controllers.analytics import parse_range
from admin.controllers.dashboard import rates
from admin.controllers.settings import FIELDS, parse_field
from admin.lockout import LoginThrottle
from admin.pulls import PullState


def test_throttle_locks_account_then_ip_and_expires() -> None:
    t = LoginThrottle(account_limit=3, ip_limit=5, window_s=60)
    for _ in range(3):
        assert t.retry_after("root", "1.1.1.1", 0) == 0
        t.fail("root", "1.1.1.1", 0)
    assert t.retry_after("root", "2.2.2.2", 1) == pytest.approx(59)  # the account, from anywhere
    assert t.retry_after("other", "1.1.1.1", 1) == 0
    t.fail("a", "1.1.1.1", 2)
    t.fail("b", "1.1.1.1", 2)
    assert t.retry_after("c", "1.1.1.1", 3) > 0  # five from this IP
    assert t.retry_after("root", "2.2.2.2", 61) == 0  # the window slid past


def test_throttle_success_clears_the_account_only() -> None:
    t = LoginThrottle(account_limit=2, ip_limit=3, window_s=60)
    t.fail("root", "ip", 0)
    t.succeed("root")
    t.fail("root", "ip", 1)
    assert t.retry_after("root", "elsewhere", 1) == 0
    t.fail("x", "ip", 1)
    assert t.retry_after("root", "ip", 1) > 0


def _pair(days: int) -> tuple[bytes, bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fortress.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("fortress.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    fmt, enc = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return cert.public_bytes(pem), key.private_bytes(pem, fmt, enc), other.private_bytes(pem, fmt, enc)


def test_tls_pair_checks() -> None:
    cert, key, other = _pair(30)
    info = tlsinfo.check_pair(cert, key)
    assert info.names == ("fortress.test",) and 28 <= info.days_left() <= 30
    with pytest.raises(ValueError, match="does not match"):
        tlsinfo.check_pair(cert, other)
    with pytest.raises(ValueError, match="not a valid PEM"):
        tlsinfo.check_pair(b"junk", key)
    old, old_key, _ = _pair(-1)
    with pytest.raises(ValueError, match="expired"):
        tlsinfo.check_pair(old, old_key)


def test_dashboard_rates() -> None:
    assert rates(None, (1.0, 10, 0)).per_s == 0
    r = rates((0.0, 100, 5), (2.0, 300, 15))
    assert (r.per_s, r.error_pct) == (100.0, 5.0)
    assert rates((0.0, 100, 5), (2.0, 3, 0)).per_s == 0  # the proxy restarted: counters went back


def test_parse_range() -> None:
    now = dt.datetime(2025, 3, 12, 15, tzinfo=dt.UTC).timestamp()
    rng, first, last = parse_range("", "", "", now)
    assert (first.isoformat(), last.isoformat()) == ("2025-03-06", "2025-03-12")
    assert rng.end - rng.start == 7 * 24 and rng.end * 3600 > now
    rng, first, last = parse_range("2025-03-12", "2025-03-10", "ann", now)  # swapped: put in order
    assert (first.isoformat(), rng.user, rng.end - rng.start) == ("2025-03-10", "ann", 72)


def test_pull_state_follows_ollama_progress() -> None:
    s = PullState("id", "local", "m")
    s.apply({"status": "pulling manifest"})
    s.apply({"status": "pulling abc", "digest": "sha256:x", "total": 200})
    assert (s.percent, s.done) == (0, False)
    s.apply({"status": "pulling abc", "digest": "sha256:x", "total": 200, "completed": 50})
    assert s.percent == 25
    s.apply({"status": "pulling def", "digest": "sha256:y", "total": 200, "completed": 150})
    assert (s.percent, s.completed, s.total) == (50, 200, 400)  # all layers count
    s.apply({"status": "success"})
    assert (s.done, s.percent, s.error) == (True, 100, "")
    f = PullState("id", "local", "m")
    f.apply({"error": "pull model manifest: file does not exist"})
    assert f.done and "does not exist" in f.error


def test_settings_fields_parse_and_validate() -> None:
    by_key = {f.key: f for f in FIELDS}
    assert parse_field(by_key["security.ip_deny"], "10.0.0.0/8\n\n ::1 \n") == ["10.0.0.0/8", "::1"]
    with pytest.raises(ValueError, match="not an IP"):
        parse_field(by_key["security.ip_allow"], "10.0.0.300")
    with pytest.raises(ValueError, match="must start with /"):
        parse_field(by_key["security.blocked_endpoints"], "api/pull")
    assert parse_field(by_key["routing.retries"], "3") == 3


def test_summarise_rollups_into_chart_tables() -> None:
    from admin.queries import summarise

    rows = [
        (48, "ann", "m1", "b1", 200, 3, 30, 6, 30.0, 300.0),
        (49, "bob", "m2", "b1", 500, 1, 10, 0, 5.0, 50.0),
        (73, "ann", "m2", "b2", 200, 2, 20, 4, 10.0, 100.0),
    ]
    t = summarise(rows)
    assert t["hourly"] == [(48 * 3600, 3, 0), (49 * 3600, 1, 1), (73 * 3600, 2, 0)]
    assert t["daily"] == [("1970-01-03", 4, 1, 40, 6), ("1970-01-04", 2, 0, 20, 4)]
    assert t["models"] == [("m1", 3, 30, 6), ("m2", 3, 30, 4)]  # equal counts: by name
    assert t["backends"] == [("b1", 4, 1, 87.5, 8.8), ("b2", 2, 0, 50.0, 5.0)]
    assert t["status"] == [(200, 5), (500, 1)]
    assert t["users"] == [("ann", 5, 50, 10), ("bob", 1, 10, 0)]
