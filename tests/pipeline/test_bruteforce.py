"""Failed-authentication lockout per IP: the limit-th failure locks, windows expire, memory stays bounded."""

from __future__ import annotations

from fortress.pipeline.bruteforce import AuthFailures


def test_locks_at_the_limit_and_not_before() -> None:
    fails = AuthFailures(limit=3, window_s=60, lockout_s=300)
    fails.failure("1.2.3.4", 100.0)
    fails.failure("1.2.3.4", 101.0)
    assert fails.locked("1.2.3.4", 101.5) == 0.0
    fails.failure("1.2.3.4", 102.0)
    assert fails.locked("1.2.3.4", 102.0) == 300.0
    assert fails.locked("1.2.3.4", 352.0) == 50.0
    assert fails.locked("5.6.7.8", 102.0) == 0.0  # other addresses are unaffected


def test_lockout_ends_and_counting_starts_afresh() -> None:
    fails = AuthFailures(limit=2, window_s=60, lockout_s=10)
    fails.failure("ip", 0.0)
    fails.failure("ip", 1.0)
    assert fails.locked("ip", 10.9) > 0
    assert fails.locked("ip", 11.0) == 0.0
    fails.failure("ip", 12.0)
    assert fails.locked("ip", 12.0) == 0.0  # one failure after the lockout is not two
    fails.failure("ip", 13.0)
    assert fails.locked("ip", 13.0) == 10.0


def test_failures_while_locked_do_not_extend_the_lockout() -> None:
    fails = AuthFailures(limit=1, window_s=60, lockout_s=10)
    fails.failure("ip", 0.0)
    fails.failure("ip", 5.0)
    assert fails.locked("ip", 5.0) == 5.0


def test_failures_spread_beyond_the_window_never_lock() -> None:
    fails = AuthFailures(limit=3, window_s=60, lockout_s=300)
    for t in (0.0, 30.0, 61.0, 90.0, 122.0, 150.0):
        fails.failure("ip", t)
        assert fails.locked("ip", t) == 0.0


def test_memory_is_bounded_and_expired_entries_go_first() -> None:
    fails = AuthFailures(limit=2, window_s=10, lockout_s=5000, max_entries=100)
    fails.failure("attacker", 0.0)
    fails.failure("attacker", 0.0)
    for i in range(1000):
        fails.failure(f"10.0.{i // 256}.{i % 256}", 20.0 + i)
        assert len(fails) <= 100
    assert fails.locked("attacker", 1019.0) == 5000.0 - 1019.0  # a flood of one-off addresses did not free it


def test_default_parameters_match_the_design() -> None:
    fails = AuthFailures()
    for i in range(49):
        fails.failure("ip", float(i))
    assert fails.locked("ip", 49.0) == 0.0
    fails.failure("ip", 49.5)
    assert fails.locked("ip", 49.5) == 300.0


def test_bounded_even_when_every_entry_is_locked() -> None:
    fails = AuthFailures(limit=1, window_s=10, lockout_s=10_000, max_entries=10)
    for i in range(50):
        fails.failure(f"ip{i}", float(i))
        assert len(fails) <= 10
    assert fails.locked("ip49", 50.0) > 0  # the newest lockouts survive
