"""Router invariants under random operation sequences (hypothesis): whatever happens, a choice is a
holder of the model, healthy, under its cap, and outstanding counts never go negative."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fortress.routing.choose import Router, Waiter
from fortress.routing.health import State

from .helpers import FakeClock, backend, ps, tags

NAMES = ("a", "b", "c", "d")
MODELS = ("m1", "m2", "m3")

operation = st.one_of(
    st.tuples(st.just("choose"), st.sampled_from((*MODELS, "nope")), st.frozensets(st.sampled_from(NAMES))),
    st.tuples(st.just("finish"), st.booleans(), st.integers(0, 50)),
    st.tuples(st.just("tags"), st.sampled_from(NAMES), st.sets(st.sampled_from(MODELS))),
    st.tuples(st.just("ps"), st.sampled_from(NAMES), st.sets(st.sampled_from(MODELS))),
    st.tuples(st.just("wait"), st.sampled_from(MODELS), st.sampled_from(("k1", "k2"))),
    st.tuples(st.just("tick"), st.floats(0, 20), st.none()),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(operation, max_size=60), st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_choices_always_respect_inventory_health_and_caps(ops: list[tuple], caps: list[int]) -> None:
    clock = FakeClock()
    router = Router(
        [
            backend(n, max_concurrent=cap, weight=1 + i)
            for i, (n, cap) in enumerate(zip(NAMES, caps, strict=True))
        ],
        threshold=2,
        cool_down_s=5,
        clock=clock,
        rng=random.Random(0),
    )
    for name in NAMES:  # polled once, holding nothing (unpolled backends are a separate fallback)
        router.inventory.set_tags(name, tags(), now=clock())
    running: list[str] = []
    granted: list[str] = []
    for op, x, y in ops:
        if op == "choose":
            choice = router.choose(x, exclude=y)
            if choice is None:
                continue
            name = choice.backend.name
            assert name in router.inventory.holders(f"{x}:latest")
            slots = {e["name"]: e for e in router.export()}
            slot = slots[name]
            if slot["state"] == State.OPEN.value:  # the last resort (routing/health.py): its check passes
                assert slot["probe_ok"]  # and no other holder could serve
                others = [
                    slots[n] for n in router.inventory.holders(f"{x}:latest") if n != name and n not in y
                ]
                assert all(
                    o["state"] == State.OPEN.value
                    or (o["max_concurrent"] and o["outstanding"] >= o["max_concurrent"])
                    for o in others
                )
            assert not slot["max_concurrent"] or slot["outstanding"] < slot["max_concurrent"]
            router.started(name)
            running.append(name)
        elif op == "finish" and running:
            router.finished(running.pop(y % len(running)), ok=x)
        elif op == "tags":
            router.inventory.set_tags(x, tags(*y), now=clock())
        elif op == "ps":
            router.inventory.set_ps(x, ps(*y))
        elif op == "wait":
            router.enqueue(y, Waiter(x, lambda choice: granted.append(choice.backend.name) is None))
        elif op == "tick":
            clock.now += x
        running.extend(granted)
        granted.clear()
        for entry in router.export():
            assert entry["outstanding"] == running.count(entry["name"])
