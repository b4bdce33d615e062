"""A node's usage rows into the Redis stream `fortress:usage`, acknowledged once Redis has them.

On a node (`role = "node"`, no database) this process takes the place of the SQLite writer
(fortress.state.sink) at the far end of a proxy worker's usage pipe and speaks the same protocol:
numbered frames in on stdin, one acknowledgement per batch out on `--ack-fd`, the same options, plus
`--config` for the Redis URL (it may hold a password: never on a command line). It sends with plain
blocking calls, away from the proxy's event loop and interpreter lock.

Batches. Each frame becomes one stream entry, added with XADD MAXLEN ~ `maxlen` (a control node that
stays away cannot make Redis grow without bound): `b` the batch id `<stream>/<seq>` (the proxy
worker's stream and the frame's number), `n` the node, `r` the rows as JSON arrays in usage column
order. Up to ENTRIES_PER_CALL entries go in one round trip, oldest first; each batch is acknowledged
once Redis has taken it. A call that fails is made again with the same batches, and a batch the proxy
sends again to a restarted producer keeps its id: a batch that reached Redis twice either way is
stored once by the control node (fortress.cluster.consumer).

While Redis is unreachable, batches wait here, and this process stops reading its input once
READ_AHEAD_ROWS rows wait; the proxy worker keeps every unacknowledged batch up to its own bound
(fortress.proxy.usage_pipe), beyond which new rows are dropped, counted and logged there. At the end
of input (the proxy stopped) what is held is sent for up to FINAL_S. SIGINT/SIGTERM are ignored, as by
the SQLite writer: the proxy closes the pipe last, so a graceful stop loses nothing.
"""

from __future__ import annotations

import argparse
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

from fortress.cluster.link import USAGE_STREAM, Reachability, sync_client
from fortress.config import load
from fortress.logs import AccessLog
from fortress.state.sink import ACK, ALL_REJECTED, HEAD, writer_options, writer_setup

log = logging.getLogger("fortress.usage")
RETRY_S = 1.0
ENTRIES_PER_CALL = 50
READ_AHEAD_ROWS = 20_000  # about 15 MB held here; the proxy worker keeps the rest, within its own bound
FINAL_S = 30.0
READ_BYTES = 1 << 20


class Producer:
    def __init__(self, client: redis.Redis, node: str, stream: str, maxlen: int) -> None:
        self.client = client
        self.node = node
        self.stream = stream
        self.maxlen = maxlen
        self.link = Reachability("usage producer", log)
        self.queue: deque[tuple[int, list[tuple] | None, str]] = deque()  # (seq, rows, rows as JSON)
        self.held = 0  # rows in `queue`
        self.sent = 0  # rows Redis took

    def add(self, seq: int, rows: list[tuple] | None) -> None:
        """Hold batch `seq` for sending; None: unreadable, acknowledged in its turn as all rejected."""
        payload = ""
        if rows is not None:
            try:
                payload = json.dumps(rows, separators=(",", ":"))
            except (TypeError, ValueError) as exc:  # a value JSON cannot carry: never expected from the proxy
                log.error(
                    "usage batch %d: %d rows cannot be encoded and were skipped: %s", seq, len(rows), exc
                )
                rows = None
        self.queue.append((seq, rows, payload))
        self.held += len(rows or ())

    def flush(self) -> list[tuple[int, list[tuple] | None]]:
        """Send the batches held, oldest first, until Redis fails; returns those it took: (seq, rows)."""
        done: list[tuple[int, list[tuple] | None]] = []
        while self.queue:
            chunk = [self.queue[i] for i in range(min(ENTRIES_PER_CALL, len(self.queue)))]
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for seq, rows, payload in chunk:
                        if rows is not None:
                            entry = {"b": f"{self.stream}/{seq}", "n": self.node, "r": payload}
                            pipe.xadd(USAGE_STREAM, entry, maxlen=self.maxlen, approximate=True)
                    pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self.link.failed(exc)
                return done
            self.link.ok()
            for _ in chunk:
                seq, rows, _ = self.queue.popleft()
                self.held -= len(rows or ())
                self.sent += len(rows or ())
                done.append((seq, rows))
        return done


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
    """Read frames from `fd` until it ends, sending them as they come (every RETRY_S while Redis is away)."""
    frames = Frames()
    retry_at = 0.0
    while True:
        wait = max(0.0, retry_at - time.monotonic()) if producer.queue else None
        if producer.held >= READ_AHEAD_ROWS:  # enough held here: the proxy keeps the rest
            time.sleep(wait or 0.0)
        elif select.select([fd], [], [], wait)[0]:
            data = os.read(fd, READ_BYTES)
            if not data:
                break
            for seq, rows in frames.feed(data):
                producer.add(seq, rows)
        if producer.queue and time.monotonic() >= retry_at:
            ack_fd = _answer(producer.flush(), ack_fd, access)
            if producer.queue:  # Redis failed: hold them, read on, try again in a while
                retry_at = time.monotonic() + RETRY_S
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
    """Acknowledge the batches Redis took (and write their access lines); the ack fd, None once it broke."""
    for seq, rows in done:
        if access is not None and rows:
            try:
                access.write(rows)
            except OSError as exc:  # a full disk must not stop usage from being sent
                log.error("access log: %d lines lost: %s", len(rows), exc)
        if ack_fd is not None:
            try:
                os.write(ack_fd, ACK.pack(seq, ALL_REJECTED if rows is None else 0))
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
