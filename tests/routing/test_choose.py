"""Router decisions: holders only, loaded first, least outstanding, weights, caps, health, retries."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from fortress.config import RoutingConfig
from fortress.routing.choose import Choice, Router, Verdict, Waiter
from fortress.routing.health import State

from .helpers import FakeClock, backend, ps, tags


def router_with(*records, clock=None, **kwargs) -> Router:
    return Router(records, clock=clock or FakeClock(), rng=random.Random(7), **kwargs)


def names(router: Router, model: str | None, n: int) -> list[str]:
    out = []
    for _ in range(n):
        choice = router.choose(model)
        assert choice is not None
        out.append(choice.backend.name)
    return out


def test_only_backends_that_have_the_model() -> None:
    r = router_with(backend("a"), backend("b"))
    r.inventory.set_tags("a", tags("llama3"), now=0)
    r.inventory.set_tags("b", tags("qwen"), now=0)
    assert set(names(r, "Llama3:latest", 5)) == {"a"}
    assert r.choose("mistral") is None
    assert r.why("mistral") is Verdict.UNKNOWN_MODEL


def test_loaded_backend_preferred_even_when_busier() -> None:
    r = router_with(backend("a"), backend("b"))
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
    r.inventory.set_ps("b", ps("m"))
    r.started("b")
    r.started("b")
    choice = r.choose("m")
    assert choice == Choice(r.backends[1], "m", True)


def test_least_outstanding_among_loaded() -> None:
    r = router_with(backend("a"), backend("b"), backend("c"))
    for name in ("a", "b", "c"):
        r.inventory.set_tags(name, tags("m"), now=0)
        r.inventory.set_ps(name, ps("m"))
    r.started("a")
    r.started("b")
    assert set(names(r, "m", 4)) == {"c"}


def test_round_robin_on_ties_and_weights_share_traffic() -> None:
    r = router_with(backend("a"), backend("b"))
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
        r.inventory.set_ps(name, ps("m"))
    assert names(r, "m", 4) == ["a", "b", "a", "b"]
    w = router_with(backend("a", weight=3), backend("b"))
    for name in ("a", "b"):
        w.inventory.set_tags(name, tags("m"), now=0)
        w.inventory.set_ps(name, ps("m"))
    counts = Counter(names(w, "m", 400))
    assert counts == {"a": 300, "b": 100}


def test_cold_model_goes_to_least_busy_and_sticks_there() -> None:
    r = router_with(backend("a"), backend("b"), backend("c"))
    for name in ("a", "b", "c"):
        r.inventory.set_tags(name, tags("cold", "x", "y"), now=0)
    r.inventory.set_ps("a", ps("x", "y"))
    r.inventory.set_ps("b", ps("x"))
    first = r.choose("cold")
    assert first is not None and first.backend.name == "c" and not first.loaded
    r.started("c")
    # the burst that follows finds it (optimistically) loaded on c rather than loading it elsewhere
    second = r.choose("cold")
    assert second is not None and second.backend.name == "c" and second.loaded


def test_cap_excludes_full_backends_then_verdict_busy() -> None:
    r = router_with(backend("a", max_concurrent=1), backend("b", max_concurrent=1))
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
    for _ in range(2):
        choice = r.choose("m")
        assert choice is not None
        r.started(choice.backend.name)
    assert r.choose("m") is None
    assert r.why("m") is Verdict.BUSY


def test_queue_hands_freed_slots_to_waiters_fairly() -> None:
    r = router_with(backend("a", max_concurrent=1))
    r.inventory.set_tags("a", tags("m"), now=0)
    first = r.choose("m")
    assert first is not None
    r.started("a")
    granted: list[tuple[str, Choice]] = []

    def waiter(label: str) -> Waiter:
        return Waiter("m", lambda choice: granted.append((label, choice)) is None)

    for label, key in (("k1-1", "k1"), ("k1-2", "k1"), ("k2-1", "k2")):
        assert r.enqueue(key, waiter(label))
    r.finished("a", ok=True)
    r.finished("a", ok=True)
    r.finished("a", ok=True)
    assert [label for label, _ in granted] == ["k1-1", "k2-1", "k1-2"]
    assert r.export()[0]["outstanding"] == 1  # the last grant holds the slot
    assert len(r.queue) == 0


def test_waiter_that_left_gives_the_slot_back() -> None:
    r = router_with(backend("a", max_concurrent=1))
    r.inventory.set_tags("a", tags("m"), now=0)
    r.started("a")
    gone = Waiter("m", lambda choice: False)
    stays: list[Choice] = []
    assert r.enqueue("k", gone)
    assert r.enqueue("k", Waiter("m", lambda choice: stays.append(choice) is None))
    r.finished("a", ok=True)
    assert len(stays) == 1 and r.export()[0]["outstanding"] == 1
    w = Waiter("m", lambda choice: True)
    assert r.enqueue("k", w) and r.dequeue("k", w) and not r.dequeue("k", w)


def test_breaker_takes_failing_backend_out_and_probe_brings_it_back() -> None:
    clock = FakeClock()
    r = router_with(backend("a"), backend("b"), clock=clock, threshold=2, cool_down_s=10)
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
        r.inventory.set_ps(name, ps("m"))
    opened: list[str] = []
    r.on_open = opened.append
    for _ in range(2):
        r.started("a")
        r.finished("a", ok=False, error="502 from backend")
    assert opened == ["a"]  # the poller is asked to check it at once
    r.probe("a", ok=False, error="connection refused")
    assert r.healthy() == {"b"}
    assert set(names(r, "m", 4)) == {"b"}
    clock.now += 10
    r.probe("a", ok=True)
    assert r.healthy() == {"a", "b"}
    assert "a" in names(r, "m", 2)


def test_the_healthy_set_follows_every_breaker_change_while_it_is_asked_between_them() -> None:
    """healthy() is kept between changes ("auto" asks on every request): each change must show at once."""
    clock = FakeClock()
    r = router_with(backend("a"), backend("b"), clock=clock, threshold=1, cool_down_s=10)
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
    assert r.healthy() == {"a", "b"}
    r.started("a")
    r.finished("a", ok=False, error="502 from backend")  # open, but its health check still passes
    assert r.export()[0]["state"] == "open" and r.healthy() == {"a", "b"}
    r.probe("a", ok=False, error="connection refused")
    assert r.healthy() == {"b"}
    clock.now += 10
    assert r.healthy() == {"b"}  # the cool-down alone moves nothing until a request asks
    r.choose("m", exclude=frozenset({"b"}))  # asks a's breaker: half-open now
    assert r.export()[0]["state"] == "half_open" and r.healthy() == {"a", "b"}
    r.started("a")
    r.finished("a", ok=False, error="502 from backend")  # the probe failed: open again
    assert r.healthy() == {"b"}
    r.set_backends([backend("b"), backend("c")])
    assert r.healthy() == {"b", "c"}


def test_an_open_breaker_routes_around_but_never_takes_away_the_last_backend_up() -> None:
    """Request failures open a's breaker while its health check passes: b serves while it can."""
    clock = FakeClock()
    r = router_with(backend("a"), backend("b", max_concurrent=1), clock=clock, threshold=2, cool_down_s=10)
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
    for _ in range(2):
        r.started("a")
        r.finished("a", ok=False, error="backend closed the connection")
    assert r.export()[0]["state"] == "open" and r.export()[0]["probe_ok"]
    assert r.healthy() == {"a", "b"}  # both are up: both lists count
    first = r.choose("m")
    assert first is not None and first.backend.name == "b"
    r.started("b")  # b is now at its cap: a, open but up, is the last resort
    second = r.choose("m")
    assert second is not None and second.backend.name == "a"
    r.probe("a", ok=False, error="connection refused")  # really down: no longer a resort
    assert r.choose("m") is None and r.why("m") is Verdict.BUSY
    r.finished("b", ok=True)
    third = r.choose("m")
    assert third is not None and third.backend.name == "b"


def test_half_open_admits_a_single_request() -> None:
    clock = FakeClock()
    r = router_with(backend("a"), clock=clock, threshold=1, cool_down_s=5)
    r.inventory.set_tags("a", tags("m"), now=0)
    r.finished("a", ok=False)
    assert r.choose("m") is not None  # open, but its health check has not failed: still the last resort
    r.probe("a", ok=False)
    assert r.choose("m") is None and r.why("m") is Verdict.UNAVAILABLE
    clock.now += 5
    assert r.choose("m") is not None
    r.started("a")
    assert r.choose("m") is None  # the probe is in flight
    r.finished("a", ok=True)
    assert r.export()[0]["state"] == State.CLOSED.value


def test_exclude_prefers_another_backend_but_falls_back() -> None:
    r = router_with(backend("a"), backend("b"))
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
        r.inventory.set_ps(name, ps("m"))
    for _ in range(3):
        choice = r.choose("m", exclude=frozenset({"a"}))
        assert choice is not None and choice.backend.name == "b"
    only = router_with(backend("a"))
    only.inventory.set_tags("a", tags("m"), now=0)
    choice = only.choose("m", exclude=frozenset({"a"}))
    assert choice is not None and choice.backend.name == "a"


def test_model_missing_routes_elsewhere() -> None:
    r = router_with(backend("a"), backend("b"))
    for name in ("a", "b"):
        r.inventory.set_tags(name, tags("m"), now=0)
    r.model_missing("a", "M:latest")
    assert set(names(r, "m", 3)) == {"b"}


def test_no_model_means_any_ollama_backend() -> None:
    r = router_with(backend("a"), backend("o", type="openai", models=("gpt-4o",)))
    assert set(names(r, None, 3)) == {"a"}


def test_openai_provider_serves_prefixed_names() -> None:
    r = router_with(backend("a"), backend("oai", type="openai", models=("gpt-4o",)))
    r.inventory.set_tags("a", tags("m"), now=0)
    choice = r.choose("oai/gpt-4o")
    assert choice is not None and choice.backend.name == "oai" and choice.model == "gpt-4o"
    assert r.choose("gpt-4o") is None


def test_unrefreshed_backends_are_a_last_resort() -> None:
    r = router_with(backend("new"))
    choice = r.choose("anything")
    assert choice is not None and choice.backend.name == "new"
    r.inventory.set_tags("new", tags("m"), now=0)
    assert r.choose("anything") is None


def test_set_backends_keeps_counts_and_health_of_kept_names() -> None:
    r = router_with(backend("a"), backend("b"), threshold=1)
    r.started("a")
    r.finished("b", ok=False)
    r.inventory.set_tags("b", tags("m"), now=0)
    r.set_backends([backend("a", weight=5), backend("c")])
    exported = {e["name"]: e for e in r.export()}
    assert exported["a"]["outstanding"] == 1 and exported["a"]["weight"] == 5
    assert set(exported) == {"a", "c"}
    assert r.inventory.get("b") is None
    r.set_backends([backend("a"), backend("b")])
    assert {e["name"]: e["state"] for e in r.export()}["b"] == "closed"  # a new breaker for a new b


def test_retry_delay_grows_with_jitter_and_is_bounded() -> None:
    r = Router(rng=random.Random(1), backoff_base_s=0.1, backoff_max_s=1.0, retries=2, retry_budget_s=2)
    for attempt, ceiling in ((1, 0.1), (2, 0.2), (3, 0.4), (10, 1.0)):
        delays = {r.retry_delay(attempt) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered
    assert r.may_retry(1, 0.5) and r.may_retry(2, 1.9)
    assert not r.may_retry(3, 0.1)
    assert not r.may_retry(1, 2.5)


def test_from_config_reads_routing_section() -> None:
    r = Router.from_config([backend("a")], RoutingConfig(retries=5, backoff_base_ms=10, retry_budget_ms=100))
    assert r.may_retry(5, 0.1) and not r.may_retry(6, 0.0) and not r.may_retry(1, 0.2)
    assert repr(r) == "<Router [1 backends, 0 outstanding, 0 queued]>"


@pytest.mark.parametrize("ok", [True, False])
def test_finished_on_unknown_backend_is_harmless(ok: bool) -> None:
    r = router_with(backend("a"))
    r.finished("gone", ok=ok)
    r.started("gone")
    r.probe("gone", ok=ok)
    assert r.export()[0]["outstanding"] == 0


def test_a_backend_moved_to_a_new_url_gets_a_fresh_breaker() -> None:
    from fortress.state.snapshot import BackendRecord

    old = BackendRecord("a", "http://127.0.0.1:9")
    router = Router([old], threshold=1)
    router.inventory.set_tags("a", {"models": [{"name": "m:latest"}]}, 0.0)
    router.started("a")
    router.finished("a", ok=False)
    assert router.export()[0]["state"] == State.OPEN.value
    router.set_backends([BackendRecord("a", "http://127.0.0.1:11434")])
    assert router.export()[0]["state"] == State.CLOSED.value
    router.set_backends([BackendRecord("a", "http://127.0.0.1:11434", weight=3)])  # same URL: kept
    assert router.export()[0]["state"] == State.CLOSED.value
