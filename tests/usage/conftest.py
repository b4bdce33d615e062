"""Real load for usage tests: client threads against a real proxy, keeping the request id of every
answer they received (the X-Request-ID header), so tests compare them with the usage rows."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import psutil

BODY = {"model": "llama3.2", "prompt": "hi", "stream": False}


class Load:
    """`threads` clients sending requests back to back until stop(): mostly generations (one in four
    streamed), and one in ten with a wrong key (a 401 is a completed request with a usage row too)."""

    def __init__(self, url: str, key: str, threads: int = 4) -> None:
        self.url = url
        self.key = key
        self.seen: list[str] = []  # request ids of completed requests
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []  # transport errors: none are expected
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=120) as client:
            i = n
            while not self._stop.is_set():
                i += 1
                key = self.key if i % 10 else self.key + "x"
                headers = {"Authorization": f"Bearer {key}"}
                try:
                    if i % 4 == 0:
                        with client.stream(
                            "POST", "/api/generate", json={**BODY, "stream": True}, headers=headers
                        ) as r:
                            r.read()
                    else:
                        r = client.post("/api/generate", json=BODY, headers=headers)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.seen.append(r.headers["x-request-id"])
                    self.statuses[r.status_code] += 1

    def progress(self, more: int, timeout: float = 60.0) -> None:
        """Wait until `more` requests have completed from now."""
        target = len(self.seen) + more
        deadline = time.monotonic() + timeout
        while len(self.seen) < target:
            assert time.monotonic() < deadline, f"the load stalled at {len(self.seen)} requests"
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(150)


def writers_of(pid: int) -> list[psutil.Process]:
    """The usage writer processes under the proxy process `pid` (one per worker)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "fortress.state.sink" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def usage_ids(db: Path) -> Counter[str]:
    with sqlite3.connect(db) as conn:
        return Counter(r[0] for r in conn.execute("SELECT request_id FROM usage"))


def lost_and_doubled(seen: list[str], stored: Counter[str]) -> tuple[int, int]:
    """Completed requests without a usage row, and usage rows stored more than once."""
    assert len(seen) == len(set(seen)), "the proxy gave two requests the same id"
    lost = sum(1 for rid in seen if stored[rid] == 0)
    doubled = sum(n - 1 for n in stored.values() if n > 1)
    return lost, doubled
