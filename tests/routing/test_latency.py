"""Decision latency at 50 backends x 200 models (every backend holds every model: the worst case).

Run as a script for the figures: `.venv/bin/python -m tests.routing.test_latency`.
"""

from __future__ import annotations

import random
import time

from fortress.routing import federation
from fortress.routing.choose import Router

from .helpers import backend, ps, tags

BACKENDS = 50
MODELS = 200
DECISIONS = 20_000


def build() -> tuple[Router, list[str]]:
    rng = random.Random(3)
    models = [f"model{i}:{'latest' if i % 2 else '7b'}" for i in range(MODELS)]
    router = Router([backend(f"b{i}", weight=1 + i % 3) for i in range(BACKENDS)], rng=rng)
    for i in range(BACKENDS):
        router.inventory.set_tags(f"b{i}", tags(*models), now=0)
        router.inventory.set_ps(f"b{i}", ps(*rng.sample(models, 3)))
    return router, models


def measure() -> dict[str, float]:
    """Per-decision cost of choose + started + finished, in microseconds; also one /api/tags merge."""
    router, models = build()
    rng = random.Random(5)
    asked = [rng.choice(models) for _ in range(DECISIONS)]
    samples = []
    clock = time.perf_counter_ns
    for model in asked:
        start = clock()
        choice = router.choose(model)
        assert choice is not None
        router.started(choice.backend.name)
        router.finished(choice.backend.name, ok=True)
        samples.append(clock() - start)
    samples.sort()
    start = clock()
    federation.tags(router.inventory, router.healthy())
    merge_us = (clock() - start) / 1000
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "max_us": samples[-1] / 1000,
        "tags_merge_us": merge_us,
    }


def test_p99_decision_latency_is_microseconds() -> None:
    figures = measure()
    print(figures)
    assert figures["p99_us"] < 500, figures  # typically ~20 us; generous for a loaded CI machine


if __name__ == "__main__":
    print(measure())
