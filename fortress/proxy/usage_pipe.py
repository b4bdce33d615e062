"""Usage rows leave the proxy through a pipe to the writer process (fortress.state.sink), in batches.

`record()` is a list append; every 250 ms the batch is marshalled and written to the pipe without
waiting. If the writer falls far behind (the pipe's buffer holds more than MAX_BUFFERED bytes), rows
are counted as dropped rather than letting the proxy's memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys

from fortress.state.sink import frame

log = logging.getLogger("fortress.usage")
MAX_PENDING = 100_000
MAX_BUFFERED = 64 * 1024 * 1024


class UsagePipe:
    def __init__(self, db_path: str, interval_s: float = 0.25, max_pending: int = MAX_PENDING) -> None:
        self.db_path = db_path
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.pending: list[tuple] = []
        self.sent = 0
        self.dropped = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def record(self, row: tuple) -> None:
        """Queue one row (usage columns in order); O(1), never blocks, never raises."""
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(row)

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fortress.state.sink", self.db_path, stdin=asyncio.subprocess.PIPE
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-pipe")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            self._send()

    def _send(self) -> None:
        proc = self._proc
        if not self.pending or proc is None or proc.stdin is None:
            return
        batch, self.pending = self.pending, []
        transport = proc.stdin.transport
        if proc.returncode is not None or transport.is_closing():
            self.dropped += len(batch)
            return
        if transport.get_write_buffer_size() > MAX_BUFFERED:  # the writer is stuck: do not hoard
            self.dropped += len(batch)
            return
        proc.stdin.write(frame(batch))
        self.sent += len(batch)

    async def close(self, timeout_s: float = 30.0) -> None:
        """Send what is queued, close the pipe, and wait for the writer to store it all."""
        self._stop.set()
        if self._task is not None:
            await self._task
        self._send()
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            log.error("usage writer did not finish within %.0f s; stopping it", timeout_s)
            proc.kill()
        if proc.returncode:
            log.error("usage writer exited with %s", proc.returncode)
