"""Shared fixtures: real processes on loopback (simulator, proxy, admin) over a real SQLite file."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(
    port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0, host: str = "127.0.0.1"
) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise RuntimeError(f"process exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    """SIGTERM, wait, and return what the process printed (for log assertions)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.stdout.read().decode(errors="replace") if proc.stdout else ""


def start(args: list[str], env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        **kw,  # type: ignore[arg-type]
    )


@dataclass
class Sim:
    """One simulator process (`python -m fortress.sim`); restartable on its port, as a backend coming back."""

    directory: Path
    flags: tuple[str, ...] = ()
    port: int = 0  # 0: a free port, learnt from the ready file
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Sim:
        ready = self.directory / f"sim-{time.monotonic_ns()}.ready"
        log = self.directory / f"sim-{time.monotonic_ns()}.log"
        argv = [PY, "-m", "fortress.sim", "--port", str(self.port), "--ready-file", str(ready), *self.flags]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator {self.flags} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        self.port = int(ready.read_text().strip().rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_sim/requests").json()

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests")

    def call(self, method: str, path: str, body: dict) -> httpx.Response:
        """Change the backend directly (pull/delete/copy), as another client of it would."""
        return httpx.request(method, f"{self.url}{path}", json=body, timeout=10)


def start_sim(*extra: str, name: str = "sim", port: int = 0) -> Sim:
    """A simulator in its own directory; a chosen port lets a restarted one be the same backend."""
    return Sim(Path(tempfile.mkdtemp(prefix="fortress-sim-")), ("--name", name, *extra), port=port).start()


@pytest.fixture(scope="session")
def sim() -> Iterator[Sim]:
    s = start_sim()
    yield s
    stop(s.proc)


@dataclass
class Fortress:
    """A configured Fortress home: config file, database, and (once started) a proxy process."""

    home: Path
    port: int
    config: Path
    proc: subprocess.Popen | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db(self) -> Path:
        return self.home / "data" / "fortress.db"

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [PY, "-m", "fortress", *args, "--config", str(self.config)],
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and res.returncode != 0:
            raise AssertionError(f"fortress {' '.join(args)} failed: {res.stderr}")
        return res

    def key(self, user: str = "alice", *flags: str) -> str:
        if user not in self.cli("user", "list").stdout.split():
            self.cli("user", "add", user)
        key = self.cli("key", "create", "--user", user, *flags).stdout.splitlines()[0].strip()
        if self.proc is not None:
            # a key works on its first request (tests/clients shows it); this one warms the worker's
            # snapshot, so tests that time requests do not also time that first configuration check
            httpx.get(f"{self.url}/api/version", headers={"X-API-Key": key})
        return key

    def usage(self, request_ids: set[str], columns: str = "model, backend, status") -> dict[str, tuple]:
        """`columns` of the usage rows of these requests, by request id; waits (up to 10 s) for the writer."""
        marks = ",".join("?" * len(request_ids))
        end = time.monotonic() + 10
        while True:
            with closing(sqlite3.connect(self.db)) as conn:
                found = conn.execute(
                    f"SELECT request_id, {columns} FROM usage WHERE request_id IN ({marks})",
                    tuple(request_ids),
                ).fetchall()
            if len(found) == len(request_ids) or time.monotonic() > end:
                return {r[0]: tuple(r[1:]) for r in found}
            time.sleep(0.1)

    def serve(self) -> None:
        self.proc = start([PY, "-m", "fortress", "serve", "--config", str(self.config)])
        wait_port(self.port, self.proc)

    def stop(self) -> str:
        out = stop(self.proc) if self.proc else ""
        self.logs.append(out)
        self.proc = None
        return out


def make_fortress(tmp: Path, backends: list[tuple[str, str]], extra: str = "") -> Fortress:
    port = free_port()
    lines = [
        "[proxy]",
        f'listen = "127.0.0.1:{port}"',
        "header_timeout_s = 2",
        "[admin]",
        f'listen = "127.0.0.1:{free_port()}"',
        "[database]",
        'path = "data/fortress.db"',
    ]
    for name, url in backends:
        lines += ["[[backends]]", f'name = "{name}"', f'url = "{url}"']
    config = tmp / "config.toml"
    text = "\n".join(lines) + "\n" + extra
    config.write_text(_merge(text))
    f = Fortress(tmp, port, config)
    f.cli("init", "--admin-user", "admin", "--admin-password-stdin", stdin="correct horse battery\n")
    return f


def _merge(text: str) -> str:
    """Let `extra` add keys to a section the base already has: fold repeated [section] headers."""
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current = ""
    arrays: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[["):
            arrays.append((stripped, []))
            current = "\0array"
            continue
        if stripped.startswith("["):
            current = stripped
            if current not in sections:
                sections[current] = []
                order.append(current)
            continue
        if current == "\0array":
            arrays[-1][1].append(line)
        else:
            sections.setdefault(current, []).append(line)
    out: list[str] = list(sections.get("", []))
    for name in order:
        out += [name, *sections[name]]
    for name, body in arrays:
        out += [name, *body]
    return "\n".join(out) + "\n"


@pytest.fixture
def fortress(tmp_path: Path, sim: Sim) -> Iterator[Fortress]:
    f = make_fortress(tmp_path, [("local", sim.url)])
    try:
        f.serve()  # inside: a proxy that started but never listened is stopped too
        yield f
    finally:
        f.stop()
