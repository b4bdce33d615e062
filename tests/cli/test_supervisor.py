"""`fortress run`'s supervisor with real child processes: restart on death, SIGTERM forwarded, SIGKILL
after the drain deadline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

from fortress.cli import Supervisor
from fortress.state.db import migrate

SLEEPER = """
import signal, sys, time, pathlib
marker = pathlib.Path(sys.argv[1])
def stop(*_):
    marker.write_text("got SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop if sys.argv[2] == "polite" else signal.SIG_IGN)
pathlib.Path(sys.argv[1] + ".ready").touch()
while True:
    time.sleep(0.05)
"""


async def _wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_restarts_a_dying_child_and_forwards_sigterm(tmp_path: Path) -> None:
    db_path = tmp_path / "fortress.db"
    await migrate(db_path)
    marker = tmp_path / "sleeper"
    sup = Supervisor(
        {
            "dies": [sys.executable, "-c", "import sys; sys.exit(3)"],
            "sleeper": [sys.executable, "-c", SLEEPER, str(marker), "polite"],
        },
        drain_s=5.0,
        db_path=str(db_path),
    )
    task = asyncio.create_task(sup.run())

    def restarts() -> int:
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            return conn.execute(
                "SELECT COUNT(*) FROM audit WHERE action = 'process.restart' AND target = 'dies'"
                " AND detail = 'exit status 3'"
            ).fetchone()[0]

    await _wait_for(lambda: restarts() >= 2)  # died, restarted after 1 s, died again
    await _wait_for(lambda: Path(str(marker) + ".ready").exists())
    sleeper_pid = sup.procs["sleeper"].pid
    os.kill(os.getpid(), signal.SIGTERM)  # what an init system would send to `fortress run`
    assert await asyncio.wait_for(task, 5.0) == 0
    assert marker.read_text() == "got SIGTERM"
    assert sup.procs["sleeper"].pid == sleeper_pid and sup.procs["sleeper"].returncode == 0


async def test_a_child_ignoring_sigterm_is_killed_after_the_deadline(tmp_path: Path) -> None:
    db_path = tmp_path / "fortress.db"
    await migrate(db_path)
    marker = tmp_path / "stubborn"
    sup = Supervisor(
        {"stubborn": [sys.executable, "-c", SLEEPER, str(marker), "stubborn"]}, 0.5, str(db_path)
    )
    task = asyncio.create_task(sup.run())
    await _wait_for(lambda: Path(str(marker) + ".ready").exists())
    started = time.monotonic()
    sup.stopping.set()
    assert await asyncio.wait_for(task, 5.0) == 0
    assert 0.4 < time.monotonic() - started < 3.0
    assert sup.procs["stubborn"].returncode == -signal.SIGKILL
