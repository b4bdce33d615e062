"""Rate limits: the sliding-log decision, then one behaviour suite run against all three stores."""

from __future__ import annotations

import itertools
import multiprocessing
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.pipeline.limits import RING, Limiter, LocalLimiter, RedisLimiter, decide, merges, open_limiter
from fortress.pipeline.shm import SharedLimiter

T0 = 1_700_000_400.0  # a multiple of 60 and 3600: the start of a window
_names = itertools.count()


def test_decide_counts_what_is_in_the_window() -> None:
    d = decide(3, 60, 100.0, 1, 2, 50.0, [(50.0, 1), (70.0, 1)], True)
    assert d.allowed and d.remaining == 0 and d.reset_s == pytest.approx(10.0) and d.retry_after_s == 0
    d = decide(3, 60, 100.0, 1, 2, 50.0, [(50.0, 1), (70.0, 1)], False)
    assert d.allowed and d.remaining == 1
    d = decide(3, 60, 100.0, 1, 0, None, [], True)
    assert d.allowed and d.remaining == 2 and d.reset_s == 60.0


def test_decide_retry_is_when_enough_has_left() -> None:
    log = [(50.0, 1), (70.0, 1), (90.0, 1)]
    d = decide(3, 60, 100.0, 1, 3, 50.0, log, True)
    assert not d.allowed and d.remaining == 0 and d.retry_after_s == pytest.approx(10.0)
    d = decide(3, 60, 100.0, 2, 3, 50.0, log, True)  # two must leave
    assert d.retry_after_s == pytest.approx(30.0)
    d = decide(1000, 60, 100.0, 1, 1200, 50.0, [(50.0, 700), (70.0, 500)], False)  # tokens: 201 must go
    assert d.retry_after_s == pytest.approx(10.0)
    d = decide(3, 60, 100.0, 5, 0, None, [], True)  # more than the limit never fits
    assert not d.allowed and d.retry_after_s == 60.0


def test_merges_only_above_the_ring_and_within_a_slot() -> None:
    slot = 255 / (RING - 1)  # window 255 s: one-second slots
    assert not merges(10.2, 10.7, 255, RING)
    assert merges(10.2, 10.7, 255, RING + 1) and merges(10.2, 10.7, 255, None)
    assert not merges(10.2, 10.2 + slot, 255, None)


@pytest.fixture(params=["local", "shared", "redis"])
def limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Limiter]:
    if request.param == "local":
        yield LocalLimiter()
    elif request.param == "shared":
        path = str(tmp_path / "limits.shm")
        SharedLimiter.create(path, counters=256, logs=64)
        shared = SharedLimiter(path)
        yield shared
        shared.close()
    else:
        yield open_limiter(redis_url=request.getfixturevalue("redis_url"))


def bucket() -> str:
    return f"b{next(_names)}"  # redis is shared by the session: fresh names keep tests independent


def test_hit_allows_exactly_the_limit(limiter: Limiter) -> None:
    b = bucket()
    results = [limiter.hit(b, 5, 60, T0 + i * 0.1) for i in range(8)]
    assert [d.allowed for d in results] == [True] * 5 + [False] * 3
    assert [d.remaining for d in results[:5]] == [4, 3, 2, 1, 0]
    denied = results[5]
    assert denied.limit == 5 and denied.retry_after_s > 0
    assert denied.reset_s == pytest.approx(60 - 0.5)
    assert limiter.errors == 0


def test_window_slides(limiter: Limiter) -> None:
    b = bucket()
    for i in range(10):
        assert limiter.hit(b, 10, 60, T0 + i).allowed
    assert not limiter.hit(b, 10, 60, T0 + 59.5).allowed
    # each admit leaves the window exactly 60 s after it was counted
    assert limiter.hit(b, 10, 60, T0 + 60).allowed
    assert not limiter.hit(b, 10, 60, T0 + 60.5).allowed
    assert [limiter.hit(b, 10, 60, T0 + 61 + k / 10).allowed for k in range(3)] == [True, False, False]
    # a window later everything is forgotten
    assert sum(limiter.hit(b, 10, 60, T0 + 240).allowed for _ in range(12)) == 10


def test_denied_hits_are_not_counted(limiter: Limiter) -> None:
    b = bucket()
    for _ in range(50):
        limiter.hit(b, 3, 60, T0)
    assert limiter.hit(b, 3, 60, T0 + 120).allowed  # only 3 counted, all expired by now


def test_retry_after_is_when_it_fits(limiter: Limiter) -> None:
    b = bucket()
    for i in range(4):
        limiter.hit(b, 4, 60, T0 + 10 + i)
    denied = limiter.hit(b, 4, 60, T0 + 20)
    assert not denied.allowed and denied.retry_after_s == pytest.approx(50.0)
    later = T0 + 20 + denied.retry_after_s
    assert not limiter.hit(b, 4, 60, later - 0.001).allowed
    assert limiter.hit(b, 4, 60, later).allowed


def test_peek_does_not_count(limiter: Limiter) -> None:
    b = bucket()
    for _ in range(20):
        assert limiter.peek(b, 2, 60, T0).allowed
    assert limiter.hit(b, 2, 60, T0).allowed
    assert limiter.hit(b, 2, 60, T0).allowed
    assert not limiter.peek(b, 2, 60, T0).allowed


def test_add_counts_tokens_after_the_fact(limiter: Limiter) -> None:
    b = bucket()
    limiter.add(b, 900, 3600, T0)
    d = limiter.peek(b, 1000, 3600, T0 + 1)
    assert d.allowed and d.remaining == 100
    limiter.add(b, 150, 3600, T0 + 2)  # one response may overshoot: the next request is refused
    d = limiter.peek(b, 1000, 3600, T0 + 3)
    assert not d.allowed and d.remaining == 0
    # the first 900 leave an hour after they were counted (the two adds share one 14 s slot at most)
    assert T0 + 3600 - 3 <= T0 + 3 + d.retry_after_s <= T0 + 3600 + 2 + 3600 / (RING - 1)
    assert limiter.peek(b, 1000, 3600, T0 + 3 + d.retry_after_s).allowed


def test_changing_the_window_starts_afresh(limiter: Limiter) -> None:
    b = bucket()
    for _ in range(3):
        limiter.hit(b, 3, 60, T0)
    assert not limiter.hit(b, 3, 60, T0).allowed
    assert limiter.hit(b, 3, 3600, T0).allowed


def test_buckets_are_independent(limiter: Limiter) -> None:
    a, b = bucket(), bucket()
    assert limiter.hit(a, 1, 60, T0).allowed
    assert not limiter.hit(a, 1, 60, T0).allowed
    assert limiter.hit(b, 1, 60, T0).allowed


def test_slots(limiter: Limiter) -> None:
    b = bucket()
    assert limiter.acquire_slot(b, 2)
    assert limiter.acquire_slot(b, 2)
    assert not limiter.acquire_slot(b, 2)
    limiter.release_slot(b)
    assert limiter.acquire_slot(b, 2)
    for _ in range(5):  # extra releases never go below zero
        limiter.release_slot(b)
    assert limiter.acquire_slot(b, 1)
    assert not limiter.acquire_slot(b, 1)


def test_auth_failures_lock_at_the_limit(limiter: Limiter) -> None:
    ip = f"192.0.2.{next(_names) % 250}-{bucket()}"
    assert limiter.auth_locked(ip, T0) == 0.0
    assert [limiter.auth_failure(ip, 3, 60, 300, T0 + i) for i in range(2)] == [0.0, 0.0]
    assert limiter.auth_locked(ip, T0 + 2) == 0.0
    assert limiter.auth_failure(ip, 3, 60, 300, T0 + 2) == pytest.approx(300.0)
    assert limiter.auth_locked(ip, T0 + 2.5) == pytest.approx(299.5)
    assert limiter.auth_failure(ip, 3, 60, 300, T0 + 3) == pytest.approx(299.0)  # no longer lockout
    assert limiter.auth_locked(ip, T0 + 302) == 0.0
    assert limiter.auth_locked("198.51.100.7", T0 + 3) == 0.0  # others are not affected


def test_local_limiter_memory_is_bounded() -> None:
    limiter = LocalLimiter(max_buckets=100)
    for i in range(1000):
        limiter.hit(f"k{i}", 10, 60, T0 + i)
        assert len(limiter._logs) <= 100


def test_shared_table_reuses_expired_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.shm")
    SharedLimiter.create(path, counters=8, logs=8)
    shared = SharedLimiter(path, max_probe=8)
    for i in range(8):
        assert shared.hit(f"k{i}", 1, 60, T0).allowed
    assert shared.hit("k9", 1, 60, T0).allowed and shared.errors == 1  # full: let through, counted
    assert shared.hit("k10", 1, 60, T0 + 120).allowed and shared.errors == 1  # expired entries reused
    assert not shared.hit("k10", 1, 60, T0 + 120).allowed
    shared.close()


def test_shared_rejects_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.shm"
    path.write_bytes(b"x" * 4096)
    with pytest.raises(ValueError, match="not a Fortress limits table"):
        SharedLimiter(str(path))


def test_redis_down_falls_back_to_local_limits_fast_and_counts() -> None:
    limiter = open_limiter(redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    assert limiter.hit("x", 1, 60, T0).allowed
    assert not limiter.hit("x", 1, 60, T0).allowed  # counted in this process: the limit still holds
    assert limiter.acquire_slot("x", 1)
    assert not limiter.acquire_slot("x", 1)
    limiter.release_slot("x")
    assert limiter.acquire_slot("x", 1)  # the local slot was given back locally
    assert limiter.auth_failure("192.0.2.1", 1, 60, 60, T0) == 60.0
    assert limiter.auth_locked("192.0.2.1", T0) == 60.0
    assert isinstance(limiter, RedisLimiter) and not limiter.shared
    assert limiter.errors >= 6
    assert time.monotonic() - started < 1.0  # one timeout at most, not one per call


def test_redis_down_with_workers_falls_back_to_the_machines_shared_table(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.shm")
    SharedLimiter.create(path)
    one, two = (open_limiter(redis_url="redis://127.0.0.1:1/0", shm_path=path) for _ in range(2))
    assert one.hit("y", 2, 60, T0).allowed and two.hit("y", 2, 60, T0).allowed
    assert not one.hit("y", 2, 60, T0).allowed and not two.hit("y", 2, 60, T0).allowed  # one count
    assert one.acquire_slot("y", 1) and not two.acquire_slot("y", 1)
    one.release_slot("y")
    assert two.acquire_slot("y", 1)


# ---- across processes ----------------------------------------------------------------------------


def _hammer(kind: str, target: str, limit: int, tries: int, start: Any, out: multiprocessing.Queue) -> None:
    import redis

    store: Limiter = SharedLimiter(target) if kind == "shared" else RedisLimiter(redis.Redis.from_url(target))
    start.wait()
    allowed = sum(store.hit("shared-bucket", limit, 3600, T0 + i * 1e-6).allowed for i in range(tries))
    slots = sum(store.acquire_slot("shared-slots", 7) for _ in range(20))
    # 40 failed keys each from one address, limit 50: the 50th of the 80 locks it, in either process
    unlocked = sum(store.auth_failure("192.0.2.9", 50, 3600, 600, T0 + i * 1e-3) == 0.0 for i in range(40))
    out.put((allowed, slots, unlocked))


@pytest.mark.parametrize("kind", ["shared", "redis"])
def test_two_processes_share_limits_slots_and_failures_exactly(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "shared":
        target = str(tmp_path / "limits.shm")
        SharedLimiter.create(target)
    else:
        import redis

        target = request.getfixturevalue("redis_url")
        redis.Redis.from_url(target).flushdb()
    ctx = multiprocessing.get_context("spawn")  # no state inherited: each process opens the store itself
    out: multiprocessing.Queue = ctx.Queue()
    start = ctx.Barrier(2)
    limit, tries = (15000, 20000) if kind == "shared" else (1500, 2000)
    procs = [ctx.Process(target=_hammer, args=(kind, target, limit, tries, start, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    assert sum(r[0] for r in results) == limit
    assert all(r[0] > 0 for r in results)  # both really competed
    assert sum(r[1] for r in results) == 7
    assert sum(r[2] for r in results) == 49


# ---- the span property -------------------------------------------------------------------------

_arrivals = st.lists(st.floats(0.0, 3.0), min_size=1, max_size=120)  # gaps between requests, seconds


def _spans_hold(admits: list[float], limit: int, window_s: float) -> None:
    """No half-open window-long span (t - window_s, t] holds more than `limit` admits."""
    for i in range(len(admits) - limit):
        assert admits[i + limit] - admits[i] >= window_s, (i, admits[i], admits[i + limit])


@given(_arrivals, st.integers(1, 12), st.sampled_from([5, 10, 60]))
@settings(max_examples=300, deadline=None)
def test_no_window_long_span_holds_more_than_the_limit(gaps: list[float], limit: int, window_s: int) -> None:
    """Exact (limit <= RING): never more than `limit` per span, and a refusal only when it is full."""
    store = LocalLimiter()
    now, admits = T0, []
    for gap in gaps:
        now += gap
        d = store.hit("k", limit, window_s, now)
        inside = sum(1 for t in admits if t > now - window_s)
        assert d.allowed == (inside < limit), (now, inside)
        if d.allowed:
            admits.append(now)
        else:
            assert d.retry_after_s == pytest.approx(admits[-limit] + window_s - now)
    _spans_hold(admits, limit, window_s)


@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=600), st.integers(RING + 1, RING + 40))
@settings(max_examples=40, deadline=None)
def test_above_the_ring_spans_still_hold_and_refusals_are_one_slot_early_at_most(
    gaps: list[float], limit: int
) -> None:
    window_s = 30
    slot = window_s / (RING - 1)
    store = LocalLimiter()
    now, admits = T0, []
    for gap in gaps:
        now += gap
        d = store.hit("k", limit, window_s, now)
        if d.allowed:
            admits.append(now)
        else:  # refused: the limit was reached, counting admits up to one slot older than the window
            assert sum(1 for t in admits if t > now - window_s - slot) >= limit
    _spans_hold(admits, limit, window_s)


@pytest.mark.parametrize("kind", ["shared", "redis"])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["hit", "peek", "add", "acquire", "release", "fail", "locked"]),
            st.sampled_from(["a", "b"]),
            st.floats(0, 40),
            st.integers(1, 5),
        ),
        max_size=60,
    )
)
@settings(max_examples=40, deadline=None)
def test_shared_stores_answer_like_the_local_store(
    kind: str, ops: list[tuple[str, str, float, int]], request: pytest.FixtureRequest
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "shared":
            path = str(Path(tmp) / "limits.shm")
            SharedLimiter.create(path, counters=64, logs=16)
            store: Any = SharedLimiter(path)
            prefix = ""
        else:
            store = open_limiter(redis_url=request.getfixturevalue("redis_url"))
            prefix = bucket()  # redis is shared by the session: fresh names keep examples apart
        local = LocalLimiter()
        now = T0
        for op, name, step, amount in ops:
            now += step  # the clock only moves forward
            name = prefix + name
            limit = amount * 60 if amount == 5 else amount  # sometimes above the ring: merged entries
            if op == "hit":
                results = [s.hit(name, limit, 60, now) for s in (local, store)]
            elif op == "peek":
                results = [s.peek(name, limit, 60, now) for s in (local, store)]
            elif op == "add":
                results = [s.add(name, amount, 60, now) for s in (local, store)]
            elif op == "acquire":
                results = [s.acquire_slot(name, 2) for s in (local, store)]
            elif op == "release":
                results = [s.release_slot(name) for s in (local, store)]
            elif op == "fail":
                results = [s.auth_failure(name, 3, 30, 20, now) for s in (local, store)]
            else:
                results = [s.auth_locked(name, now) for s in (local, store)]
            assert results[0] == results[1], (op, name, now)
        if kind == "shared":
            store.close()
