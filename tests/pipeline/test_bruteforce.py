"""Failed-authentication lockout per IP: the limit-th failure locks, windows expire, memory stays bounded."""

from __future__ import annotations

from fortress.pipeline.bruteforce import AuthFailures, Lockout, step
from fortress.pipeline.limits import LocalLimiter


def fail(
    fails: AuthFailures, ip: str, now: float, limit: int = 3, window_s: float = 60, lockout_s: float = 300
) -> float:
    return fails.failure(ip, limit, window_s, lockout_s, now)


def test_step_is_the_rule() -> None:
    assert step(0.0, 0, 0.0, 100.0, 3, 60, 300) == (100.0, 1, 0.0)
    assert step(100.0, 1, 0.0, 101.0, 3, 60, 300) == (100.0, 2, 0.0)
    assert step(100.0, 2, 0.0, 102.0, 3, 60, 300) == (402.0, 0, 402.0)  # locked; next window after it
    assert step(402.0, 0, 402.0, 200.0, 3, 60, 300) == (402.0, 0, 402.0)  # no change while locked
    assert step(100.0, 2, 0.0, 160.0, 3, 60, 300) == (160.0, 1, 0.0)  # the window ran out


def test_locks_at_the_limit_and_not_before() -> None:
    fails = AuthFailures()
    assert fail(fails, "1.2.3.4", 100.0) == 0.0
    assert fail(fails, "1.2.3.4", 101.0) == 0.0
    assert fails.locked("1.2.3.4", 101.5) == 0.0
    assert fail(fails, "1.2.3.4", 102.0) == 300.0
    assert fails.locked("1.2.3.4", 102.0) == 300.0
    assert fails.locked("1.2.3.4", 352.0) == 50.0
    assert fails.locked("5.6.7.8", 102.0) == 0.0  # other addresses are unaffected


def test_lockout_ends_and_counting_starts_afresh() -> None:
    fails = AuthFailures()
    fail(fails, "ip", 0.0, limit=2, lockout_s=10)
    fail(fails, "ip", 1.0, limit=2, lockout_s=10)
    assert fails.locked("ip", 10.9) > 0
    assert fails.locked("ip", 11.0) == 0.0
    assert fail(fails, "ip", 12.0, limit=2, lockout_s=10) == 0.0  # one failure after the lockout is not two
    assert fail(fails, "ip", 13.0, limit=2, lockout_s=10) == 10.0


def test_failures_while_locked_do_not_extend_the_lockout() -> None:
    fails = AuthFailures()
    fail(fails, "ip", 0.0, limit=1, lockout_s=10)
    assert fail(fails, "ip", 5.0, limit=1, lockout_s=10) == 5.0
    assert fails.locked("ip", 5.0) == 5.0


def test_failures_spread_beyond_the_window_never_lock() -> None:
    fails = AuthFailures()
    for t in (0.0, 30.0, 61.0, 90.0, 122.0, 150.0):
        assert fail(fails, "ip", t) == 0.0
        assert fails.locked("ip", t) == 0.0


def test_memory_is_bounded_and_expired_entries_go_first() -> None:
    fails = AuthFailures(max_entries=100)
    fail(fails, "attacker", 0.0, limit=2, window_s=10, lockout_s=5000)
    fail(fails, "attacker", 0.0, limit=2, window_s=10, lockout_s=5000)
    for i in range(1000):
        fail(fails, f"10.0.{i // 256}.{i % 256}", 20.0 + i, limit=2, window_s=10, lockout_s=5000)
        assert len(fails) <= 100
    assert fails.locked("attacker", 1019.0) == 5000.0 - 1019.0  # a flood of one-off addresses did not free it


def test_bounded_even_when_every_entry_is_locked() -> None:
    fails = AuthFailures(max_entries=10)
    for i in range(50):
        fail(fails, f"ip{i}", float(i), limit=1, window_s=10, lockout_s=10_000)
        assert len(fails) <= 10
    assert fails.locked("ip49", 50.0) > 0  # the newest lockouts survive


def test_lockout_binds_the_policy_numbers_to_a_store() -> None:
    lockout = Lockout(LocalLimiter())  # the design's defaults: 50 failures / 60 s -> 300 s
    for i in range(49):
        assert lockout.failure("ip", float(i)) == 0.0
    assert lockout.locked("ip", 49.0) == 0.0
    assert lockout.failure("ip", 49.5) == 300.0
    assert lockout.locked("ip", 49.5) == 300.0
