"""Simulator processes for these tests: `python -m fortress.sim --port 0 --ready-file ...`, real loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunningSim:
    """A simulator subprocess and the base URL it wrote to its ready file."""

    url: str
    proc: subprocess.Popen

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests").json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def launch(directory: Path, *flags: str) -> RunningSim:
    """Start a simulator on a free port and wait for its ready file."""
    ready = directory / f"sim-{time.monotonic_ns()}.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fortress.sim", "--port", "0", "--ready-file", str(ready), *flags],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 15
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("simulator did not write its ready file")
        time.sleep(0.02)
    return RunningSim(ready.read_text().strip(), proc)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    """One default simulator shared by a test module (tests that mutate models use `launch_sim`)."""
    running = launch(tmp_path_factory.mktemp("sim"), "--name", "shared")
    yield running
    running.stop()


@pytest.fixture
def launch_sim(tmp_path: Path) -> Iterator[Callable[..., RunningSim]]:
    """Start simulators with specific flags; all are stopped after the test."""
    started: list[RunningSim] = []

    def start(*flags: str) -> RunningSim:
        running = launch(tmp_path, *flags)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
