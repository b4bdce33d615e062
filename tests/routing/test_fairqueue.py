"""FairQueue: bounded, FIFO per key, round robin across keys."""

from __future__ import annotations

from fortress.routing.fairqueue import FairQueue


def take_all(q: FairQueue[str]) -> list[str]:
    out = []
    while (taken := q.take(lambda item: item)) is not None:
        out.append(taken[0])
    return out


def test_round_robin_across_keys_fifo_within() -> None:
    q: FairQueue[str] = FairQueue(limit=10)
    for item in ("a1", "a2", "a3"):
        assert q.push("a", item)
    assert q.push("b", "b1")
    assert q.push("c", "c1")
    assert take_all(q) == ["a1", "b1", "c1", "a2", "a3"]
    assert len(q) == 0


def test_bounds_total_and_per_key() -> None:
    q: FairQueue[str] = FairQueue(limit=3, per_key=2)
    assert q.push("a", "a1") and q.push("a", "a2")
    assert not q.push("a", "a3")
    assert q.push("b", "b1")
    assert not q.push("c", "c1")
    assert len(q) == 3


def test_unservable_waiters_keep_their_place() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a", "a-cold")
    q.push("b", "b-warm")
    q.push("a", "a-warm")
    served = q.take(lambda item: item if item.endswith("warm") else None)
    assert served == ("a-warm", "a-warm")  # a's oldest servable waiter; a moves to the back
    assert q.take(lambda item: item if item.endswith("warm") else None) == ("b-warm", "b-warm")
    assert q.take(lambda item: item if item.endswith("warm") else None) is None
    assert len(q) == 1


def test_remove() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("a", "x")
    assert q.remove("a", "x")
    assert not q.remove("a", "x")
    assert len(q) == 0
    assert repr(q) == "<FairQueue [0 waiting, 0 keys]>"
    assert q.push("a", "y")  # the key can come back
