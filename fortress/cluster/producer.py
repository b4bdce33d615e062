"""A node's usage rows into the Redis stream `fortress:usage`, acknowledged once Redis has them.

On a node (`role = "node"`, no database) this process takes the place of the SQLite writer
(fortress.state.sink) at the far end of a proxy worker's usage pipe and speaks the same protocol:
numbered frames in on stdin, acknowledgements out on `--ack-fd`, the same options, plus `--config`
for the Redis URL (it may hold a password: never on a command line). It sends with plain blocking
calls, away from the proxy's event loop and interpreter lock.

Frames. The proxy worker writes the rows of each event-loop turn as one frame before any of the
turn's bytes reach a client (fortress.proxy.usage_pipe), so a row is in the pipe before its client can
have the whole answer, and what reached the pipe outlives a SIGKILL of the proxy:
this process is not killed with it (no parent-death signal; SIGINT/SIGTERM are ignored, as by the
SQLite writer, and the proxy closes the pipe last on a graceful stop), reads the pipe to its end,
sends what it read and exits. The pipe is made PIPE_BYTES large and read every READ_PAUSE_S, all it
holds at once: a wake-up per frame would cost both processes more than the rows themselves, and
the pipe never fills (it would take 100 MB/s of rows), so the proxy's writes always go straight in.

Entries. The frames read are sent every LINGER_S (the cadence the proxy's own batches had): oldest
first, as stream entries of up to ENTRY_ROWS rows each, up to ENTRIES_PER_CALL entries a round trip,
added with XADD MAXLEN ~ `maxlen` (a control node that stays away cannot make Redis grow without
bound). An entry holds `b` its batch id `<stream>/<first>-<last>` (the proxy worker's stream and the
numbers of its frames), `n` the node, `r` the rows as JSON arrays in usage column order. Frames are
then acknowledged with one write: the last one's number (acknowledgements are cumulative), preceded
by those of frames that could not be read or encoded (acknowledged as all rejected).

Exactly once. One script adds an entry and sets `fortress:usage:sent:<stream>` to its last frame's
number, so Redis knows which frames it holds. A producer reads that number before it sends anything,
and again after a failed call: the frames at or below it are acknowledged without being sent again
(those the proxy sends again to the successor of a producer that died before acknowledging, or those
of a call whose answer was lost). An entry delivered twice to the control node is stored once there
(fortress.cluster.consumer).

While Redis is unreachable, frames wait here, and this process stops reading its input once
READ_AHEAD_ROWS rows wait; the proxy worker keeps every unacknowledged frame up to its own bound
(fortress.proxy.usage_pipe), beyond which new rows are dropped, counted and logged there. At the end
of input (the proxy stopped or died) what is held is sent at once, and retried for up to FINAL_S.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import logging
import marshal
import os
import select
import socket
import sys
import time
from collections import deque

import redis

from fortress.cluster.link import USAGE_SENT, USAGE_STREAM, Reachability, sync_client
from fortress.config import load
from fortress.logs import AccessLog
from fortress.state.sink import ACK, ALL_REJECTED, HEAD, writer_options, writer_setup

log = logging.getLogger("fortress.usage")
RETRY_S = 1.0
LINGER_S = 0.25
ENTRY_ROWS = 1000
ENTRIES_PER_CALL = 50
READ_AHEAD_ROWS = 20_000  # about 15 MB held here; the proxy worker keeps the rest, within its own bound
FINAL_S = 30.0
READ_BYTES = 1 << 20
PIPE_BYTES = 1 << 20  # Linux's default limit for an unprivileged process (/proc/sys/fs/pipe-max-size)
READ_PAUSE_S = 0.01
SENT_TTL_S = 86400  # a stream's mark outlives any wait for a producer's successor
# KEYS: the stream, the proxy worker's mark. ARGV: maxlen, the mark's ttl, the entry's last frame, its batch
# id, the node, its rows ('' for frames without rows: only the mark moves). The mark moves only once the
# entry is in (a script stops at its first error), and nothing else runs in between.
_SEND_LUA = """
if ARGV[6] ~= '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'b', ARGV[4], 'n', ARGV[5], 'r', ARGV[6])
end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
return 1
"""

Frame = tuple[int, list[tuple] | None]  # a frame held: its number, its rows (None: unreadable)


class Producer:
    def __init__(self, client: redis.Redis, node: str, stream: str, maxlen: int) -> None:
        self.client = client
        self.node = node
        self.stream = stream
        self.maxlen = maxlen
        self.mark = USAGE_SENT + stream
        self.link = Reachability("usage producer", log)
        self.queue: deque[Frame] = deque()
        self.held = 0  # rows in `queue`
        self.sent = 0  # rows Redis took
        self.repeated = 0  # frames Redis had from a predecessor: acknowledged, not sent again
        self.taken: int | None = None  # the last frame of this stream Redis holds; None: ask it first
        self._send = client.register_script(_SEND_LUA)

    def add(self, seq: int, rows: list[tuple] | None) -> None:
        """Hold frame `seq` for sending; None: unreadable, acknowledged in its turn as all rejected."""
        self.queue.append((seq, rows))
        self.held += len(rows or ())

    def flush(self) -> list[tuple[int, list[tuple] | None]]:
        """Send the frames held, oldest first, until Redis fails; returns those Redis holds now, as
        (seq, rows): rows None for an unreadable frame, [] for one a predecessor had sent."""
        done: list[tuple[int, list[tuple] | None]] = []
        queue = self.queue
        try:
            if self.taken is None:
                self.taken = int(self.client.get(self.mark) or 0)
            self._skip(done)
            while queue:
                with self.client.pipeline(transaction=False) as pipe:
                    count = self._entries(pipe)
                    pipe.execute()
                for _ in range(count):
                    seq, rows = queue.popleft()
                    self.held -= len(rows or ())
                    self.sent += len(rows or ())
                    done.append((seq, rows))
                self.taken = done[-1][0]
        except (redis.RedisError, OSError) as exc:
            self.taken = None  # what the failed call did, only Redis knows: ask it before trying again
            self.link.failed(exc)
            return done
        self.link.ok()
        return done

    def _skip(self, done: list[tuple[int, list[tuple] | None]]) -> None:
        """Acknowledge, without sending them again, the frames Redis holds already."""
        queue, taken, skipped = self.queue, self.taken or 0, 0
        while queue and queue[0][0] <= taken:
            seq, rows = queue.popleft()
            self.held -= len(rows or ())
            done.append((seq, None if rows is None else []))
            skipped += 1
        if skipped:
            self.repeated += skipped
            log.info("usage: %d batches were in Redis already; not sent again", skipped)

    def _entries(self, pipe: redis.client.Pipeline) -> int:
        """Up to ENTRIES_PER_CALL entries of the oldest frames held, added to `pipe`; how many frames."""
        count = 0
        for _ in range(ENTRIES_PER_CALL):
            entry = self._entry(count)
            if not entry:
                break
            rows = self._encode(count, entry)
            count += len(entry)
            first, last = entry[0][0], entry[-1][0]
            args = [self.maxlen, SENT_TTL_S, last, f"{self.stream}/{first}-{last}", self.node, rows]
            self._send(keys=[USAGE_STREAM, self.mark], args=args, client=pipe)
        return count

    def _encode(self, start: int, entry: list[Frame]) -> str:
        """The entry's rows as one JSON array ("" for none). A frame holding a value JSON cannot carry
        (never expected from the proxy) is logged and left out, to be acknowledged as all rejected."""
        try:
            return _json(entry)
        except (TypeError, ValueError):
            pass
        for i, (seq, rows) in enumerate(entry):
            try:
                _json([(seq, rows)])
            except (TypeError, ValueError) as exc:
                log.error(
                    "usage batch %d: %d rows cannot be encoded and were skipped: %s",
                    seq,
                    len(rows or ()),
                    exc,
                )
                self.queue[start + i] = entry[i] = (seq, None)
                self.held -= len(rows or ())
        return _json(entry)

    def _entry(self, start: int) -> list[Frame]:
        """The held frames from the `start`th on that make one entry: up to ENTRY_ROWS rows (one frame at
        least)."""
        out: list[Frame] = []
        rows = 0
        for item in itertools.islice(self.queue, start, None):
            n = len(item[1] or ())
            if out and rows + n > ENTRY_ROWS:
                break
            out.append(item)
            rows += n
        return out


def _json(frames: list[Frame]) -> str:
    rows = [row for _, frame_rows in frames if frame_rows for row in frame_rows]
    return json.dumps(rows, separators=(",", ":")) if rows else ""


class Frames:
    """Whole frames (fortress.state.sink's HEAD, then marshal'd rows) out of bytes arriving in pieces."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, list[tuple] | None]]:
        """(seq, rows) for each frame completed; rows is None for a frame that cannot be read."""
        self.buf += data
        out: list[tuple[int, list[tuple] | None]] = []
        while len(self.buf) >= HEAD.size:
            size, seq = HEAD.unpack_from(self.buf)
            end = HEAD.size + size
            if len(self.buf) < end:
                break
            payload = bytes(self.buf[HEAD.size : end])
            del self.buf[:end]
            try:
                rows = marshal.loads(payload)
                if not isinstance(rows, list):
                    raise TypeError(f"a batch is a list of rows, not {type(rows).__name__}")
            except (EOFError, ValueError, TypeError) as exc:
                log.error("usage batch %d (%d bytes) is unreadable and was skipped: %s", seq, size, exc)
                rows = None
            out.append((seq, rows))
        return out


def serve(fd: int, producer: Producer, ack_fd: int | None, access: AccessLog | None) -> int:
    """Read frames from `fd` until it ends; send them every LINGER_S (every RETRY_S while Redis is away),
    and what is left at once when it ends."""
    frames = Frames()
    due = 0.0  # when the frames held go to Redis
    with contextlib.suppress(OSError, AttributeError):  # not a pipe, a lower limit, not Linux: 64 KiB do too
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    while True:
        wait = max(0.0, due - time.monotonic()) if producer.queue else None
        if producer.held >= READ_AHEAD_ROWS:  # enough held here: the proxy keeps the rest
            time.sleep(wait or 0.0)
        elif select.select([fd], [], [], wait)[0]:
            data = os.read(fd, READ_BYTES)
            if not data:
                break
            if not producer.queue:
                due = time.monotonic() + LINGER_S
            for seq, rows in frames.feed(data):
                producer.add(seq, rows)
            time.sleep(READ_PAUSE_S)  # let the next rows gather in the pipe
        if producer.queue and time.monotonic() >= due:
            ack_fd = _answer(producer.flush(), ack_fd, access)
            if producer.queue:  # Redis failed: hold them, read on, try again in a while
                due = time.monotonic() + RETRY_S
    deadline = time.monotonic() + FINAL_S
    while True:
        ack_fd = _answer(producer.flush(), ack_fd, access)
        if not producer.queue or time.monotonic() > deadline:
            break
        time.sleep(RETRY_S)
    if producer.held:
        log.error(
            "usage: %d rows not delivered: Redis unreachable for the last %.0f s", producer.held, FINAL_S
        )
    log.info("usage producer stopped: %d rows sent, %d not", producer.sent, producer.held)
    return 0


def _answer(
    done: list[tuple[int, list[tuple] | None]], ack_fd: int | None, access: AccessLog | None
) -> int | None:
    """Acknowledge the frames Redis holds in one write (acknowledgements are cumulative: the last one,
    after those of unreadable frames) and write the access lines of the rows sent; the ack fd, None
    once it broke."""
    if not done:
        return ack_fd
    if access is not None and (lines := [row for _, rows in done if rows for row in rows]):
        try:
            access.write(lines)
        except OSError as exc:  # a full disk must not stop usage from being sent
            log.error("access log: %d lines lost: %s", len(lines), exc)
    if ack_fd is not None:
        acks = [ACK.pack(seq, ALL_REJECTED) for seq, rows in done if rows is None]
        if done[-1][1] is not None:
            acks.append(ACK.pack(done[-1][0], 0))
        try:
            os.write(ack_fd, b"".join(acks))
        except BrokenPipeError:  # the proxy is gone: send what is left in the pipe, then stop
            ack_fd = None
    return ack_fd


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fortress.cluster.producer", description="usage rows to Redis"
    )
    ap.add_argument("--config", required=True, help="config.toml with [cluster] redis_url")
    writer_options(ap)
    args = ap.parse_args(argv)
    access = writer_setup(args)
    cluster = load(args.config).cluster
    if not cluster.redis_url:
        log.error("usage producer: [cluster] redis_url is not set in %s", args.config)
        return 2
    stream = args.stream or f"{socket.gethostname()}:{os.getpid()}:{time.time_ns() // 1_000_000}"
    producer = Producer(sync_client(cluster.redis_url), cluster.name, stream, cluster.usage_stream_maxlen)
    return serve(sys.stdin.fileno(), producer, args.ack_fd, access)


if __name__ == "__main__":
    raise SystemExit(main())
