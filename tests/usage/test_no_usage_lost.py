"""Issue 9.2 through the real proxy under real load: every completed request gets exactly one usage row
when the usage writer is SIGKILLed (several times) and when the database is locked for 40 s."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import Sim, make_fortress

from .conftest import Load, lost_and_doubled, usage_ids, writers_of

LOCK_S = 40.0
# the load's wrong-key requests must not trip the brute-force lockout (that would make it all 429s)
EXTRA = "[security]\nauth_fail_limit = 1000000\n"


def _kill_a_writer(proxy_pid: int, workers: int, timeout: float = 30.0) -> None:
    """SIGKILL one usage writer and wait until its worker has started another."""
    victim = writers_of(proxy_pid)[0]
    victim.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        pids = [w.pid for w in writers_of(proxy_pid)]
        if len(pids) == workers and victim.pid not in pids:
            return
        assert time.monotonic() < deadline, "the usage writer was not restarted"
        time.sleep(0.02)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkilled_writer_loses_no_usage_row(tmp_path: Path, sim: Sim, workers: int) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], f"{EXTRA}[proxy]\nworkers = {workers}\n")
    key = f.key("alice")
    f.serve()
    assert f.proc is not None
    load = Load(f.url, key).start()
    try:
        for _ in range(3):
            load.progress(150)
            _kill_a_writer(f.proc.pid, workers)
        load.progress(150)
    finally:
        load.stop()
    out = f.stop()  # graceful: the last batches are committed before the proxy exits
    assert load.failures == [] and load.statuses[200] > 0 and load.statuses[401] > 0
    lost, doubled = lost_and_doubled(load.seen, usage_ids(f.db))
    print(f"\n{len(load.seen)} completed requests, {workers} worker(s), 3 writers killed: {lost} rows lost")
    assert (lost, doubled) == (0, 0)
    assert out.count("exited with signal 9; restarting it") == 3, out[-3000:]


def test_database_locked_for_40_s_loses_no_usage_row(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], EXTRA)
    key = f.key("alice")
    f.serve()
    load = Load(f.url, key).start()
    try:
        load.progress(100)
        lock = sqlite3.connect(f.db, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        try:
            before = len(load.seen)
            time.sleep(LOCK_S)
            during = len(load.seen) - before
        finally:
            lock.execute("COMMIT")
            lock.close()
        load.progress(100)
    finally:
        load.stop()
    out = f.stop()
    assert load.failures == [] and during > 0  # the proxy kept serving while the database was locked
    lost, doubled = lost_and_doubled(load.seen, usage_ids(f.db))
    print(f"\n{len(load.seen)} completed requests, {during} during a {LOCK_S:.0f} s lock: {lost} rows lost")
    assert (lost, doubled) == (0, 0)
    assert "waited" in out and "for the database" in out, out[-3000:]  # the wait was logged, not silent
