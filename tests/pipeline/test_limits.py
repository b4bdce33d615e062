"""Rate limits: the sliding-window decision, then one behaviour suite run against all three stores."""

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

from fortress.pipeline.limits import Limiter, LocalLimiter, RedisLimiter, decide, open_limiter, roll
from fortress.pipeline.shm import SharedLimiter

T0 = 1_700_000_400.0  # a multiple of 60 and 3600: the start of a window
_names = itertools.count()


def test_roll() -> None:
    assert roll(5, 3, 9, 5) == (3, 9)
    assert roll(5, 3, 9, 6) == (0, 3)
    assert roll(5, 3, 9, 8) == (0, 0)


def test_decide_weights_the_previous_window() -> None:
    # 10 in the previous window, a quarter into the current one: 7.5 still count
    d = decide(10, 60, 15.0 + 60, 1, 0, 10, 1, True)
    assert d.allowed and d.remaining == 1  # 10 - 8.5
    d = decide(10, 60, 15.0 + 60, 1, 2, 10, 1, True)
    assert not d.allowed and d.remaining == 0
    # 9.5 used: it fits once 7.5 -> 7.0 of the previous weight, i.e. at f = 0.3 -> 18 s in
    assert d.retry_after_s == pytest.approx(3.0)
    assert d.reset_s == pytest.approx(45.0)


def test_decide_retry_in_the_next_window() -> None:
    d = decide(10, 60, 30.0, 0, 10, 0, 1, True)
    assert not d.allowed
    # next window: 10 * (1 - f) <= 9 at f = 0.1 -> 30 s + 6 s
    assert d.retry_after_s == pytest.approx(36.0)


def test_decide_cost_above_limit_waits_for_everything() -> None:
    d = decide(10, 60, 30.0, 0, 0, 0, 11, True)
    assert not d.allowed and d.retry_after_s == pytest.approx(90.0)


@pytest.fixture(params=["local", "shared", "redis"])
def limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Limiter]:
    if request.param == "local":
        yield LocalLimiter()
    elif request.param == "shared":
        path = str(tmp_path / "limits.shm")
        SharedLimiter.create(path, capacity=256)
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
    for _ in range(10):
        assert limiter.hit(b, 10, 60, T0).allowed
    assert not limiter.hit(b, 10, 60, T0 + 59).allowed
    # 30 s into the next window the previous 10 weigh 5: five more fit, not six
    allowed = sum(limiter.hit(b, 10, 60, T0 + 90).allowed for _ in range(8))
    assert allowed == 5
    # two windows later everything is forgotten
    assert sum(limiter.hit(b, 10, 60, T0 + 240).allowed for _ in range(12)) == 10


def test_denied_hits_are_not_counted(limiter: Limiter) -> None:
    b = bucket()
    for _ in range(50):
        limiter.hit(b, 3, 60, T0)
    assert limiter.hit(b, 3, 60, T0 + 120).allowed  # only 3 counted, all expired by now


def test_retry_after_is_when_it_fits(limiter: Limiter) -> None:
    b = bucket()
    for _ in range(4):
        limiter.hit(b, 4, 60, T0 + 10)
    denied = limiter.hit(b, 4, 60, T0 + 20)
    assert not denied.allowed
    later = T0 + 20 + denied.retry_after_s + 1e-6
    assert not limiter.hit(b, 4, 60, later - 0.5).allowed
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
    assert not d.allowed and d.remaining == 0 and d.retry_after_s > 0


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


def test_local_limiter_memory_is_bounded() -> None:
    limiter = LocalLimiter(max_buckets=100)
    for i in range(1000):
        limiter.hit(f"k{i}", 10, 60, T0 + i)
        assert len(limiter._counters) <= 100


def test_shared_table_reuses_expired_entries(tmp_path: Path) -> None:
    path = str(tmp_path / "limits.shm")
    SharedLimiter.create(path, capacity=8)
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


def test_redis_down_lets_requests_through_fast_and_counts() -> None:
    limiter = open_limiter(redis_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    assert limiter.hit("x", 1, 60, T0).allowed
    assert limiter.hit("x", 1, 60, T0).allowed  # not asked again: no second timeout
    assert limiter.acquire_slot("x", 1)
    limiter.release_slot("x")
    assert limiter.errors == 4
    assert time.monotonic() - started < 1.0


# ---- across processes ----------------------------------------------------------------------------


def _hammer(kind: str, target: str, limit: int, tries: int, start: Any, out: multiprocessing.Queue) -> None:
    import redis

    store: Limiter = SharedLimiter(target) if kind == "shared" else RedisLimiter(redis.Redis.from_url(target))
    start.wait()
    allowed = sum(store.hit("shared-bucket", limit, 3600, T0 + i * 1e-6).allowed for i in range(tries))
    slots = sum(store.acquire_slot("shared-slots", 7) for _ in range(20))
    out.put((allowed, slots))


@pytest.mark.parametrize("kind", ["shared", "redis"])
def test_two_processes_allow_exactly_the_limit(
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


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["hit", "peek", "add", "acquire", "release"]),
            st.sampled_from(["a", "b"]),
            st.floats(0, 400),
            st.integers(1, 5),
        ),
        max_size=60,
    )
)
@settings(max_examples=60, deadline=None)
def test_shared_table_answers_like_the_local_store(ops: list[tuple[str, str, float, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "limits.shm")
        SharedLimiter.create(path, capacity=64)
        shared = SharedLimiter(path)
        local = LocalLimiter()
        now = T0
        for op, name, step, amount in ops:
            now += step  # the clock only moves forward
            if op == "hit":
                results = [store.hit(name, 6, 60, now, amount) for store in (local, shared)]
            elif op == "peek":
                results = [store.peek(name, 6, 60, now, amount) for store in (local, shared)]
            elif op == "add":
                results = [store.add(name, amount, 60, now) for store in (local, shared)]
            elif op == "acquire":
                results = [store.acquire_slot(name, 2) for store in (local, shared)]
            else:
                results = [store.release_slot(name) for store in (local, shared)]
            assert results[0] == results[1], (op, name, now)
        shared.close()
