"""`workers > 1`: the serving process supervises its workers and replaces one that dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil

from tests.conftest import Sim, make_fortress


def workers_of(pid: int) -> set[int]:
    """The supervisor's own children: its workers (each worker's usage writer is the worker's child)."""
    return {p.pid for p in psutil.Process(pid).children()}


def serving_workers(url: str, key: str, tries: int = 40) -> set[str]:
    """The workers that answered `tries` requests on fresh connections (the X-Request-ID's prefix)."""
    seen = set()
    for _ in range(tries):
        with httpx.Client(timeout=10) as client:  # a new connection each time: the kernel spreads them
            r = client.get(f"{url}/api/tags", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
        seen.add(r.headers["X-Request-ID"].split("-")[0])
    return seen


def test_a_killed_worker_is_replaced_and_the_port_keeps_serving(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], "[proxy]\nworkers = 2\n")
    key = f.key()
    f.serve()
    assert f.proc is not None
    try:
        end = time.monotonic() + 20
        while len(workers := workers_of(f.proc.pid)) < 2:
            assert time.monotonic() < end, "the two workers did not start"
            time.sleep(0.1)
        before = serving_workers(f.url, key)
        assert len(before) == 2, "every request went to one worker"

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        end = time.monotonic() + 20
        while len(now := workers_of(f.proc.pid)) < 2 or victim in now:
            assert time.monotonic() < end, f"no worker replaced {victim}: {now}"
            time.sleep(0.1)
        assert len(now & workers) == 1  # the survivor kept running; the other one is new
        after: set[str] = set()
        end = time.monotonic() + 20
        while len(after) < 2:  # the new worker takes connections as soon as it listens
            assert time.monotonic() < end, "the new worker never answered"
            after |= serving_workers(f.url, key, tries=10)
        assert len(after - before) == 1
    finally:
        out = f.stop()
    assert f"proxy worker {victim} was killed by signal 9; starting another" in out
    assert not any(psutil.pid_exists(pid) for pid in now), "a worker outlived the stop"
