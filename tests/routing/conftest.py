"""Simulator processes for the routing tests: `python -m fortress.sim --port P --ready-file F`."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sim:
    """One simulator process; restartable on the same port to model a backend coming back."""

    directory: Path
    flags: tuple[str, ...]
    port: int = 0
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Sim:
        ready = self.directory / f"sim-{time.monotonic_ns()}.ready"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fortress.sim",
                "--port",
                str(self.port),
                "--ready-file",
                str(ready),
                *self.flags,
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator {self.flags} did not start")
            time.sleep(0.02)
        self.port = int(ready.read_text().strip().rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests").json()

    def call(self, method: str, path: str, body: dict) -> httpx.Response:
        """Change the backend directly (pull/delete/copy), as another client of it would."""
        return httpx.request(method, f"{self.url}{path}", json=body, timeout=10)


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
