"""Benchmark processes: start one pinned to a CPU, wait for its port, measure its CPU and RSS, stop it."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil


def free_port() -> int:
    """A loopback port the kernel says is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> int:
    """Lift the soft open-files limit to the hard limit (inherited by children); returns it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pinned(argv: list[str], cpu: str | None) -> list[str]:
    """Prefix argv with taskset (which execs, so the pid stays the measured process)."""
    if cpu is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", cpu, *argv]


@dataclass
class Service:
    """A started process listening on a loopback port; its log file says why it died."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    argv: list[str]  # as started (pinning included), for restart()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not listen on {self.port} within {timeout}s: {self.tail()}")

    def tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def restart(self) -> None:
        """Stop and start the same command again: a fresh heap, the same port and files."""
        self.stop()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start(name: str, argv: list[str], port: int, cpu: str | None, log_dir: Path) -> Service:
    """Start argv pinned to cpu with output in log_dir/<name>.log and wait until it listens."""
    log = log_dir / f"{name}.log"
    full = pinned(argv, cpu)
    with log.open("wb") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    service = Service(name, proc, port, log, full)
    try:
        service.wait_ready()
    except BaseException:
        service.stop()
        raise
    return service


def busy_seconds(cpus: str | None) -> float:
    """CPU time the listed CPUs (all when None) spent busy for anyone, steal included: the denominator
    for telling our processes' work from everything else running on the machine."""
    times = psutil.cpu_times(percpu=True)
    chosen = range(len(times)) if cpus is None else [int(c) for c in cpus.split(",")]
    return sum(
        times[i].user + times[i].nice + times[i].system + times[i].irq + times[i].softirq + times[i].steal
        for i in chosen
    )


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for (wrk runs)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherWork:
    """Share of some CPUs taken by work that is not ours over a `with` block, in percent."""

    def __init__(self, cpus: str | None, ours: Callable[[], float]) -> None:
        self.cpus = cpus
        self.ours = ours
        self.pct = 0.0

    def __enter__(self) -> OtherWork:
        self._busy, self._ours, self._t0 = busy_seconds(self.cpus), self.ours(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        other = (busy_seconds(self.cpus) - self._busy) - (self.ours() - self._ours)
        self.pct = max(0.0, other) / (time.monotonic() - self._t0) * 100


class Meter:
    """CPU seconds and RSS of processes and their children (a supervisor's workers count too)."""

    def __init__(self, *pids: int) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]

    def _tree(self) -> list[psutil.Process]:
        tree = []
        for root in self.roots:
            with contextlib.suppress(psutil.NoSuchProcess):
                tree += [root, *root.children(recursive=True)]
        return tree

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        """Resident memory of the tree with each page counted once: every process's private pages plus
        the largest shared set. Summing RSS would count the interpreter's pages (libpython, libc,
        libsqlite3: 8 MiB) again for every Python child, though the proxy maps the same files (a
        Fortress and its usage writer: 59 MiB summed, 51 MiB resident). For one process this is its RSS."""
        private, shared = 0, 0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                own, common = resident(p.pid)
                private += own
                shared = max(shared, common)
        return private + shared


def resident(pid: int) -> tuple[int, int]:
    """A process's resident private and shared bytes (/proc/PID/smaps_rollup; Linux 4.14+)."""
    kib = {"Private_Clean:": 0, "Private_Dirty:": 0, "Shared_Clean:": 0, "Shared_Dirty:": 0}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(" ")
            if name in kib:
                kib[name] = int(rest.split()[0])
    return (
        (kib["Private_Clean:"] + kib["Private_Dirty:"]) * 1024,
        (kib["Shared_Clean:"] + kib["Shared_Dirty:"]) * 1024,
    )


class PeakRss:
    """Samples a Meter's RSS from a thread (the event loop may be busy) and keeps the maximum."""

    def __init__(self, meter: Meter, interval: float = 0.01) -> None:
        self.meter = meter
        self.interval = interval
        self.peak = meter.rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.meter.rss())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.meter.rss())
