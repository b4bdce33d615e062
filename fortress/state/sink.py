"""The usage writer process: reads batches of usage rows on stdin and stores them (`store()`).

The proxy hands rows over a pipe instead of writing SQLite itself: a writer thread in the proxy
competed for the GIL with the event loop (measured unpinned: 73 -> 45 µs of proxy CPU per small
request), and this process is small (plain sqlite3, no event loop) and runs on any free core.
Frames are a 4-byte big-endian length and a marshal'd list of row tuples in usage column order.
It ignores SIGINT/SIGTERM and stops at end of input: a graceful stop of the proxy closes the pipe
last, so nothing is lost.
"""

from __future__ import annotations

import logging
import marshal
import signal
import sqlite3
import sys
import time
from typing import BinaryIO

from fortress.state.usage import store

HEADER = 4
RETRY_FOR_S = 30.0
log = logging.getLogger("fortress.usage")


def frame(rows: list[tuple]) -> bytes:
    data = marshal.dumps(rows)
    return len(data).to_bytes(HEADER, "big") + data


def batches(stream: BinaryIO):  # type: ignore[no-untyped-def]
    """The row lists in a stream of frames, until it ends."""
    while len(head := stream.read(HEADER)) == HEADER:
        data = stream.read(int.from_bytes(head, "big"))
        try:
            yield marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            log.error("usage: an unreadable batch of %d bytes was skipped", len(data))


def _store(conn: sqlite3.Connection, rows: list[tuple]) -> None:
    """Store a batch, waiting out a busy database; a batch that cannot be stored is logged and dropped."""
    deadline = time.monotonic() + RETRY_FOR_S
    while True:
        try:
            store(conn, rows)
            return
        except sqlite3.OperationalError as exc:  # busy or locked beyond busy_timeout: try again
            if time.monotonic() > deadline:
                log.error("usage: %d events lost: %s", len(rows), exc)
                return
            time.sleep(0.1)
        except (sqlite3.Error, ValueError, TypeError, IndexError) as exc:  # malformed rows
            log.error("usage: dropping a batch of %d events that cannot be stored: %s", len(rows), exc)
            return


def serve(db_path: str, stream: BinaryIO) -> int:
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for rows in batches(stream):
        _store(conn, rows)
    conn.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(sys.argv[1], sys.stdin.buffer)


if __name__ == "__main__":
    raise SystemExit(main())
