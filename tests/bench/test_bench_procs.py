"""Process measurement: CPU that is not ours shows up as other work; a tree's memory counts pages once."""

import subprocess
import sys

import psutil
import pytest

from bench.procs import Meter, OtherWork

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass"


def test_work_we_do_not_claim_is_other() -> None:
    with OtherWork(None, lambda: 0.0) as other:
        subprocess.run([sys.executable, "-c", BUSY], check=True)
    assert other.pct > 20


def test_a_process_trees_memory_counts_shared_pages_once() -> None:
    """A Python parent and its Python child map the same interpreter: summed RSS counts it twice."""
    child = "print('ready', flush=True); input()"  # its output is the parent's: read once it is settled
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert parent.stdout is not None and parent.stdout.readline() == b"ready\n"
        tree = psutil.Process(parent.pid)
        processes = [tree, *tree.children()]
        assert len(processes) == 2
        rss = [p.memory_info().rss for p in processes]
        measured = Meter(parent.pid).rss()
        assert max(rss) <= measured < sum(rss)
        assert Meter(processes[1].pid).rss() == pytest.approx(rss[1], rel=0.05)  # one process: its RSS
    finally:
        parent.communicate(b"\n", timeout=20)
