"""Simulator processes for the routing tests (the shared Sim from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Sim


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[Callable[..., Sim]]:
    """Start simulators with flags (`sims("--models", "a,b")`); all are stopped after the test."""
    started: list[Sim] = []

    def start(*flags: str) -> Sim:
        sim = Sim(tmp_path, flags).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
