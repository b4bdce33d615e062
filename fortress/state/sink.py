"""The usage writer process: reads numbered batches of usage rows on stdin, stores each one, and
acknowledges it on an ack pipe once committed.

The proxy hands rows over a pipe instead of writing SQLite itself: a writer thread in the proxy
competed for the GIL with the event loop (measured unpinned: 73 -> 45 µs of proxy CPU per small
request), and this process is small (plain sqlite3, no event loop) and runs on any free core.

Protocol. In: frames of a 12-byte header (4-byte big-endian length, 8-byte batch sequence number) and
a marshal'd list of row tuples in usage column order. Out (on the file descriptor given by --ack-fd):
12 bytes per batch, the sequence number and how many of its rows were rejected as malformed, written
after the commit. The proxy keeps every batch until it is acknowledged (fortress.proxy.usage_pipe).

Exactly once. Every proxy worker is one stream (--stream) whose batches are numbered 1, 2, 3... The
batch's number is committed in the same transaction as its rows (table usage_streams). A restarted
writer reads the stream's last committed number and acknowledges, without storing, any batch at or
below it: when a writer dies between its commit and the proxy reading the ack, the proxy sends the
batch again and it is not stored twice. Batches arrive in order, so "at or below" means "committed".

Never dropped on a busy database: a locked or busy database (another process holding the write lock,
a long checkpoint) is waited out for as long as it lasts, with a warning every 30 s; the proxy keeps
buffering (bounded) meanwhile. Only malformed rows are rejected (logged, and counted by the proxy).
The process ignores SIGINT/SIGTERM and stops at end of input: a graceful stop of the proxy closes the
pipe last, so nothing is lost. With --access-log json it also writes each committed batch to the
access log (fortress.logs).
"""

from __future__ import annotations

import _sqlite3
import argparse
import ctypes
import logging
import marshal
import os
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from fortress.config import LOG_LEVELS, LoggingConfig
from fortress.logs import AccessLog, configure
from fortress.state.usage import committed_seq, storable, store

HEAD = struct.Struct(">IQ")  # frame: payload length, batch sequence number
ACK = struct.Struct(">QI")  # ack: batch sequence number, rows rejected
ALL_REJECTED = 0xFFFFFFFF  # an unreadable batch: every row of it
RETRY_S = 0.1
WARN_AFTER_S = 5.0
WARN_EVERY_S = 30.0
# what rows that do not fit the usage table raise; any other database error stops the writer (the proxy
# restarts it and keeps the batch), and a busy or locked database is waited out
MALFORMED = (
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    ValueError,
    TypeError,
    IndexError,
    OverflowError,
)
log = logging.getLogger("fortress.usage")
T = TypeVar("T")


def frame(seq: int, rows: list[tuple]) -> bytes:
    data = marshal.dumps(rows)
    return HEAD.pack(len(data), seq) + data


def frames(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(sequence number, payload) for each frame, until the stream ends."""
    while len(head := stream.read(HEAD.size)) == HEAD.size:
        size, seq = HEAD.unpack(head)
        yield seq, stream.read(size)


def patiently(what: str, step: Callable[[], T]) -> T:
    """step(), again and again while the database is busy or locked, however long that lasts."""
    since = time.monotonic()
    warn_at = since + WARN_AFTER_S
    while True:
        try:
            result = step()
        except sqlite3.OperationalError as exc:  # busy, locked, or briefly unwritable: wait, never drop
            now = time.monotonic()
            if now >= warn_at:
                log.warning(
                    "%s has waited %.0f s for the database (%s); nothing is lost",
                    what,
                    now - since,
                    exc,
                )
                warn_at = now + WARN_EVERY_S
            time.sleep(RETRY_S)
            continue
        if time.monotonic() - since >= WARN_AFTER_S:
            log.warning("%s went through after %.0f s", what, time.monotonic() - since)
        return result


class Writer:
    """Stores the batches of one stream into one database; see the module docstring."""

    def __init__(self, conn: sqlite3.Connection, stream: str, access: AccessLog | None = None) -> None:
        self.conn = conn
        self.stream = stream
        self.access = access
        self.last = patiently("reading the last committed batch", lambda: committed_seq(conn, stream))

    def handle(self, seq: int, data: bytes) -> int:
        """Store one batch unless it is a replay; returns how many of its rows were rejected."""
        if seq <= self.last:
            return 0
        try:
            rows = marshal.loads(data)
            if not isinstance(rows, list):
                raise TypeError(f"a batch is a list of rows, not {type(rows).__name__}")
        except (EOFError, ValueError, TypeError) as exc:
            log.error("usage batch %d (%d bytes) is unreadable and was skipped: %s", seq, len(data), exc)
            return ALL_REJECTED
        rejected = 0
        try:
            self._store(seq, rows)
        except MALFORMED as exc:
            good = [r for r in rows if storable(r)]
            rejected = len(rows) - len(good)
            log.error("usage batch %d: %d malformed rows rejected (%s)", seq, rejected, exc)
            try:
                self._store(seq, good)
            except MALFORMED as again:
                log.error("usage batch %d cannot be stored and was skipped: %s", seq, again)
                return ALL_REJECTED
            rows = good
        self.last = seq
        if self.access is not None:
            try:
                self.access.write(rows)
            except OSError as exc:  # a full disk must not stop usage from being stored
                log.error("access log: %d lines lost: %s", len(rows), exc)
        return rejected

    def _store(self, seq: int, rows: list[tuple]) -> None:
        patiently(f"usage batch {seq} ({len(rows)} rows)", lambda: store(self.conn, rows, self.stream, seq))


# An adapter for None that returns None (a dict's get, in C): without one, the sqlite3 module looks for
# __adapt__ and __conform__ on every None it binds, raising and clearing an AttributeError for each, which
# cost ~0.2 µs per NULL; a usage row has three or so (tokens, error). The value bound is NULL either way.
_NULL = {}.get


def one_thread_per_connection() -> bool:
    """Tell SQLite that this process uses each connection from one thread: without the locking of every
    API call (bind, step, malloc) and the memory statistics' mutex, a row costs ~11% fewer instructions
    (42.3k -> 37.5k under callgrind). Python's sqlite3 offers no such flag, so the library is reconfigured
    through its C API, which SQLite allows only before the process's first connection: call it first
    thing. False, and nothing changed, when the library refuses or cannot be reached."""
    try:
        lib = ctypes.CDLL(_sqlite3.__file__)  # SQLite's symbols: the module's own or its linked library's
        if lib.sqlite3_shutdown() != 0:  # back to unconfigured (no connection is open yet)
            return False
        done = lib.sqlite3_config(_CONFIG_MULTITHREAD) == 0
        lib.sqlite3_config(_CONFIG_MEMSTATUS, ctypes.c_int(0))
        return lib.sqlite3_initialize() == 0 and done
    except (OSError, AttributeError):  # no loadable library, or a build without these functions
        return False


_CONFIG_MULTITHREAD = ctypes.c_int(2)  # SQLITE_CONFIG_MULTITHREAD (sqlite3.h)
_CONFIG_MEMSTATUS = ctypes.c_int(9)  # SQLITE_CONFIG_MEMSTATUS


def connect(db_path: str) -> sqlite3.Connection:
    sqlite3.register_adapter(type(None), _NULL)
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    patiently("opening the database", lambda: conn.execute("PRAGMA journal_mode = WAL"))
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def serve(db_path: str, stream: str, source: BinaryIO, ack_fd: int | None, access: AccessLog | None) -> int:
    one_thread_per_connection()  # this process has one thread and one connection
    conn = connect(db_path)
    writer = Writer(conn, stream, access)
    for seq, data in frames(source):
        rejected = writer.handle(seq, data)
        if ack_fd is not None:
            try:
                os.write(ack_fd, ACK.pack(seq, rejected))
            except BrokenPipeError:  # the proxy is gone: store what is left in the pipe, then stop
                ack_fd = None
    conn.close()
    if access is not None:
        access.close()
    return 0


def writer_options(ap: argparse.ArgumentParser) -> None:
    """The options the proxy's usage pipe passes to its writer: this one, or fortress.cluster.producer."""
    ap.add_argument("--stream", default="", help="the proxy worker's stream id (exactly-once bookkeeping)")
    ap.add_argument("--ack-fd", type=int, default=None, help="file descriptor acknowledgements go to")
    ap.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    ap.add_argument("--log-format", choices=("text", "json"), default="text")
    ap.add_argument("--access-log", choices=("off", "json"), default="off")
    ap.add_argument("--access-log-path", default="", help='"" = stdout')


def writer_setup(args: argparse.Namespace) -> AccessLog | None:
    """A writer's start: it outlives the proxy's stop signals (the proxy closes the pipe last, so a
    graceful stop loses nothing), logs as told, and opens the access log if asked (None: none)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure(LoggingConfig(level=args.log_level, format=args.log_format))
    if args.access_log != "json":
        return None
    try:
        return AccessLog(args.access_log_path)
    except OSError as exc:  # usage matters more than the access log: store it all the same
        log.error("access log %s cannot be opened, no access log: %s", args.access_log_path, exc)
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fortress.state.sink", description="Fortress usage writer")
    ap.add_argument("db_path")
    writer_options(ap)
    args = ap.parse_args(argv)
    access = writer_setup(args)
    return serve(args.db_path, args.stream, sys.stdin.buffer, args.ack_fd, access)


if __name__ == "__main__":
    raise SystemExit(main())
