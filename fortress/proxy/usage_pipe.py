"""Usage rows leave the proxy through a pipe to the writer process (fortress.state.sink), in numbered
batches that stay in the worker until the writer acknowledges their commit.

`record()` is a list append (the hot path's whole cost). Every 250 ms the rows recorded since become
one batch: marshalled once, numbered, kept in `unacked` and written to the writer's stdin. The writer
answers on an ack pipe with the batch's number after its commit; acknowledged batches are let go.
The writer is watched: if it dies (SIGKILL, OOM, a crash), its exit is noticed at once, logged, a new
writer is started and every unacknowledged batch is sent to it again, in order. The writer commits
each batch's number with its rows and skips numbers it already committed (see fortress.state.sink),
so a re-sent batch is stored exactly once.

Bounded: unacknowledged batches may hold up to `max_unacked_bytes` of frames (a writer waiting out a
locked database keeps its batches here); past that, new batches are dropped, counted and logged. At
most WRITE_AHEAD bytes (and one batch) wait in the pipe's buffer besides, so the bound is nearly the
whole memory cost. `close()` sends what is left and waits for every acknowledgement: a graceful stop
loses nothing.

On a cluster node (the writer is fortress.cluster.producer) rows do not wait for the tick. The worker's
outbox (fortress.proxy.outbox), which holds every byte written to clients during a loop turn and
sends them together at its end, first calls `hand_over()`: the rows the turn recorded become one
batch, written to the pipe there and then (uvloop writes at once to a pipe with nothing queued),
before any of the turn's bytes reach a client; and the exchange records a row before it writes its
response's last bytes (fortress.proxy.exchange). So by the time a client can have its whole answer,
its row is in the kernel's pipe buffer, which outlives this process: a SIGKILL of the proxy loses no
row of a completed request, since the producer reads the pipe to its end, sends what it read, and
exits. Batches wait in this process only while the producer reads nothing (Redis away and the
producer's read-ahead full); those die with it. Stand-alone, a SIGKILL of the proxy loses the rows
recorded since the last tick (and any batch still waiting here for a busy writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import sys
import time
from collections import deque

from fortress.config import LoggingConfig
from fortress.state.sink import ACK, frame

log = logging.getLogger("fortress.usage")
MAX_PENDING = 100_000  # rows recorded between two flushes
MAX_UNACKED_BYTES = 64 * 1024 * 1024  # about 400,000 rows: 20 s at 20k rows/s, hours at ordinary loads
WRITE_AHEAD = 1024 * 1024  # bytes written to the pipe ahead of the writer
RESTART_BACKOFF_S = (0.0, 0.1, 0.5, 1.0, 2.0, 5.0)  # for a writer that keeps dying right after start
STABLE_AFTER_S = 10.0  # a writer that lived this long resets the backoff
DROP_LOG_EVERY_S = 10.0


class UsagePipe:
    def __init__(
        self,
        db_path: str,
        logs: LoggingConfig | None = None,
        interval_s: float = 0.25,
        max_pending: int = MAX_PENDING,
        max_unacked_bytes: int = MAX_UNACKED_BYTES,
        writer: tuple[str, ...] = (),
    ) -> None:
        self.db_path = db_path
        # the writer process's module and first arguments: on a cluster node, fortress.cluster.producer
        # --config PATH (the same protocol, into Redis); otherwise the SQLite writer
        self.writer = writer or ("fortress.state.sink", db_path)
        self.logs = logs or LoggingConfig()
        self.interval_s = interval_s
        self.max_pending = max_pending
        self.max_unacked_bytes = max_unacked_bytes
        self.stream = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns() // 1_000_000}"
        self.pending: list[tuple] = []
        # counters, in rows: sent (batched and handed to a writer), acknowledged (committed),
        # dropped (past a bound, or rejected as malformed by the writer), writer restarts
        self.sent = 0
        self.acknowledged = 0
        self.dropped = 0
        self.restarts = 0
        self.unacked: deque[tuple[int, int, bytes]] = deque()  # (seq, rows, frame), seq contiguous
        self.unacked_bytes = 0
        self._seq = 0
        self._written = 0  # the last seq written to the current writer
        self._proc: asyncio.subprocess.Process | None = None
        self._acks: asyncio.ReadTransport | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._settled = asyncio.Event()  # nothing pending and nothing unacknowledged
        self._settled.set()
        self._closing = False
        self._started = 0.0
        self._why = ""
        self._dropped_logged = 0
        self._drop_log_at = 0.0

    def record(self, row: tuple) -> None:
        """Queue one row (usage columns in order); O(1), never blocks, never raises."""
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(row)

    @property
    def unacknowledged(self) -> int:
        """Rows recorded and not yet committed by the writer."""
        return len(self.pending) + sum(n for _, n, _ in self.unacked)

    def counters(self) -> dict[str, int]:
        """For the stats row and metrics: rows sent, acknowledged, pending and dropped; writer restarts."""
        return {
            "sent": self.sent,
            "acknowledged": self.acknowledged,
            "pending": self.unacknowledged,
            "dropped": self.dropped,
            "writer_restarts": self.restarts,
        }

    # -- the writer process ----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._spawn()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._tick(), name="usage-pipe"),
            loop.create_task(self._watch(), name="usage-writer-watch"),
        ]

    async def _spawn(self) -> None:
        """Start a writer with a fresh ack pipe and send it every unacknowledged batch, in order."""
        s = self.logs
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", *self.writer,
                "--stream", self.stream, "--ack-fd", str(write_fd),
                "--log-level", s.level, "--log-format", s.format,
                "--access-log", s.access_log, "--access-log-path", s.access_log_path,
                stdin=asyncio.subprocess.PIPE,
                pass_fds=(write_fd,),
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        loop = asyncio.get_running_loop()
        self._acks, _ = await loop.connect_read_pipe(lambda: _AckReader(self), os.fdopen(read_fd, "rb", 0))
        # no await from here on: the new writer must get the oldest unacknowledged batch first (it skips
        # any number below one it has committed), so no flush may write a newer one to it before this
        self._proc = proc
        self._started = time.monotonic()
        self._written = self.unacked[0][0] - 1 if self.unacked else self._seq
        self._pump()

    async def _watch(self) -> None:
        """Restart the writer the moment it exits, unless the pipe is closing."""
        failures = 0
        while True:
            proc = self._proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            quick = time.monotonic() - self._started < STABLE_AFTER_S
            delay = RESTART_BACKOFF_S[min(failures, len(RESTART_BACKOFF_S) - 1)] if quick else 0.0
            failures = failures + 1 if quick else 0
            self.restarts += 1
            cause = f"signal {-code}" if code < 0 else f"status {code}"
            log.error(
                "usage writer (pid %d) exited with %s; restarting it in %.1f s and sending again the %d "
                "rows it had not committed",
                proc.pid, cause, delay, self.unacknowledged - len(self.pending),
            )  # fmt: skip
            await asyncio.sleep(delay)
            while True:
                try:
                    await self._spawn()
                    break
                except Exception:  # out of processes or descriptors: keep buffering, keep trying
                    log.exception("usage writer could not be started; trying again")
                    await asyncio.sleep(RESTART_BACKOFF_S[-1])

    # -- batches ---------------------------------------------------------------------------------------
    async def _tick(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            self._flush()

    def _flush(self) -> None:
        """Make the rows recorded since the last flush one numbered batch and send it."""
        self.hand_over()
        self._settle()
        self._pump()
        self._log_drops()

    def hand_over(self) -> None:
        """The rows recorded since the last batch, as one batch written to the writer's pipe now (on a
        cluster node, before each burst of the outbox: see the module docstring)."""
        if self.pending:
            rows, self.pending = self.pending, []
            self._enqueue(rows)
            self._pump()

    def _enqueue(self, rows: list[tuple]) -> None:
        try:
            entry = frame(self._seq + 1, rows)
        except ValueError as exc:  # a value marshal cannot carry: a bug upstream, never silent
            self._drop(len(rows), f"a batch could not be serialised ({exc})")
            return
        if self.unacked_bytes + len(entry) > self.max_unacked_bytes:
            self._drop(len(rows), f"{self.unacked_bytes} bytes are waiting for the writer")
            return
        self._seq += 1
        self.unacked.append((self._seq, len(rows), entry))
        self.unacked_bytes += len(entry)
        self.sent += len(rows)

    def _pump(self) -> None:
        """Write unacknowledged batches the current writer has not had yet, a bounded amount ahead."""
        proc = self._proc
        if not self.unacked or proc is None or proc.stdin is None or proc.returncode is not None:
            return
        transport = proc.stdin.transport
        if transport.is_closing():
            return
        unacked = self.unacked
        first = unacked[0][0]
        i = max(0, self._written + 1 - first)  # seqs are contiguous: the next one's place, found directly
        while i < len(unacked) and transport.get_write_buffer_size() <= WRITE_AHEAD:
            seq, _, entry = unacked[i]
            transport.write(entry)
            self._written = seq
            i += 1

    def acked(self, seq: int, rejected: int) -> None:
        """The writer committed batch `seq` (and every one before it)."""
        while self.unacked and self.unacked[0][0] <= seq:
            done, rows, entry = self.unacked.popleft()
            self.unacked_bytes -= len(entry)
            bad = min(rows, rejected) if done == seq else 0
            self.acknowledged += rows - bad
            if bad:
                self._drop(bad, "the writer rejected malformed rows")
        self._settle()
        self._pump()

    def _settle(self) -> None:
        if self.unacked or self.pending:
            self._settled.clear()
        else:
            self._settled.set()

    def _drop(self, rows: int, why: str) -> None:
        self.dropped += rows
        self._why = why

    def _log_drops(self, now: float | None = None) -> None:
        """Drops are counted on the spot and logged here, at most every DROP_LOG_EVERY_S."""
        now = time.monotonic() if now is None else now
        if self.dropped > self._dropped_logged and now >= self._drop_log_at:
            log.error(
                "%d usage rows dropped (%d in all): %s",
                self.dropped - self._dropped_logged, self.dropped, self._why or "more rows than max_pending",
            )  # fmt: skip
            self._dropped_logged = self.dropped
            self._drop_log_at = now + DROP_LOG_EVERY_S
            self._why = ""

    async def close(self, timeout_s: float = 30.0) -> None:
        """Send what is queued, wait until the writer has committed it all, and stop the writer."""
        self._stop.set()
        if not self._tasks:  # never started
            return
        tick, watch = self._tasks
        await tick
        self._flush()
        try:  # a writer that dies meanwhile is restarted by the watcher and gets the batches again
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except TimeoutError:
            self._drop(
                self.unacknowledged, f"the writer did not commit them within {timeout_s:.0f} s of the stop"
            )
        self._closing = True
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        self._log_drops(now=math.inf)
        proc = self._proc
        if proc is None or proc.stdin is None:
            return
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10.0)
        except TimeoutError:
            log.error("usage writer did not stop; killing it")
            proc.kill()
            await proc.wait()
        if self._acks is not None:
            self._acks.close()
        if proc.returncode:
            log.error("usage writer exited with %s", proc.returncode)


class _AckReader(asyncio.Protocol):
    """Reads the writer's acknowledgements (fixed-size records) and hands them to the pipe."""

    def __init__(self, pipe: UsagePipe) -> None:
        self.pipe = pipe
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        end = len(buf) - len(buf) % ACK.size
        for seq, rejected in ACK.iter_unpack(buf[:end]):
            self.pipe.acked(seq, rejected)
        self.buf = buf[end:]
