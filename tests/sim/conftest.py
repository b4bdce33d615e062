"""Simulator processes for these tests (the shared Sim from tests/conftest.py), real loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Sim


def launch(directory: Path, *flags: str) -> Sim:
    """Start a simulator on a free port and wait for its ready file."""
    return Sim(directory, flags).start()


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """One default simulator shared by a test module (tests that mutate models use `launch_sim`)."""
    running = launch(tmp_path_factory.mktemp("sim"), "--name", "shared")
    yield running
    running.stop()


@pytest.fixture
def launch_sim(tmp_path: Path) -> Iterator[Callable[..., Sim]]:
    """Start simulators with specific flags; all are stopped after the test."""
    started: list[Sim] = []

    def start(*flags: str) -> Sim:
        running = launch(tmp_path, *flags)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
