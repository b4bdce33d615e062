"""A node's usage rows into the Redis stream `fortress:usage`: a batch per frame, held while Redis is away.

On a node (`role = "node"`, no database) this process takes the place of the SQLite writer at the far
end of a proxy worker's usage pipe: it reads the same frames (fortress.state.sink's format, one frame
per 250 ms of a worker's rows) on stdin and sends them on with plain blocking calls, away from the
proxy's event loop and interpreter lock.

Batches. Each frame is one batch with an id fixed before the first attempt to send it: the one given
to `add`, else `<node>/<pid>.<start ms>/<seq>`. A batch is one stream entry (`b`: id, `n`: node,
`r`: the rows as JSON arrays in usage column order), added with XADD MAXLEN ~ `maxlen`, so a control
node that stays away cannot make Redis grow without bound. Up to ENTRIES_PER_CALL entries go in one
round trip. When a call fails the same batches are sent again, with the same ids, until Redis takes
them: a batch that reached Redis although its answer did not is then in the stream twice, and the
control node stores it once (fortress.cluster.consumer).

Bounded: while Redis is unreachable batches wait here, up to `max_rows` rows in all; rows beyond are
dropped, counted and logged (at most every DROP_LOG_EVERY_S). At the end of input (the proxy
stopped) what is held is sent for up to FINAL_S. SIGINT/SIGTERM are ignored, as by the SQLite writer:
the proxy closes the pipe last, so a graceful stop loses nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import marshal
import os
import select
import signal
import sys
import time
from collections import deque

import redis

from fortress.cluster.link import USAGE_STREAM, Reachability, sync_client
from fortress.config import load
from fortress.state.sink import HEADER

log = logging.getLogger("fortress.usage")
RETRY_S = 1.0
ENTRIES_PER_CALL = 50
FINAL_S = 30.0
DROP_LOG_EVERY_S = 10.0
READ_BYTES = 1 << 20


class Producer:
    def __init__(self, client: redis.Redis, node: str, max_rows: int, maxlen: int) -> None:
        self.client = client
        self.node = node
        self.max_rows = max_rows
        self.maxlen = maxlen
        self.source = f"{node}/{os.getpid()}.{time.time_ns() // 1_000_000}"
        self.link = Reachability("usage producer", log)
        self.queue: deque[tuple[str, int, str]] = deque()  # (batch id, rows, rows as JSON), oldest first
        self.held = 0  # rows in `queue`
        self.sent = 0  # rows Redis took
        self.dropped = 0
        self._seq = 0
        self._drops_logged = 0
        self._drop_log_at = 0.0

    def add(self, rows: list[tuple], batch: str = "") -> None:
        """Hold rows as one batch (id `batch`, or the next of this producer's own); past `max_rows`, drop."""
        if not rows:
            return
        if self.held + len(rows) > self.max_rows:
            self.dropped += len(rows)
            self._log_drops()
            return
        try:
            payload = json.dumps(rows, separators=(",", ":"))
        except (TypeError, ValueError) as exc:  # a value JSON cannot carry: never expected from the proxy
            self.dropped += len(rows)
            log.error("usage: a batch of %d rows cannot be encoded and was dropped: %s", len(rows), exc)
            return
        if not batch:
            self._seq += 1
            batch = f"{self.source}/{self._seq}"
        self.queue.append((batch, len(rows), payload))
        self.held += len(rows)

    def flush(self) -> bool:
        """Send every batch held, oldest first; False when Redis did not take them all (they stay here)."""
        while self.queue:
            chunk = [self.queue[i] for i in range(min(ENTRIES_PER_CALL, len(self.queue)))]
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    for batch, _, payload in chunk:
                        pipe.xadd(
                            USAGE_STREAM,
                            {"b": batch, "n": self.node, "r": payload},
                            maxlen=self.maxlen,
                            approximate=True,
                        )
                    pipe.execute()
            except (redis.RedisError, OSError) as exc:
                self.link.failed(exc)
                return False
            self.link.ok()
            for _ in chunk:
                _, n, _ = self.queue.popleft()
                self.held -= n
                self.sent += n
        return True

    def _log_drops(self) -> None:
        now = time.monotonic()
        if now < self._drop_log_at:
            return
        log.error(
            "usage: %d rows dropped (%d since the last report): Redis is unreachable (%s) and %d rows "
            "are already held ([cluster] usage_buffer_rows = %d)",
            self.dropped,
            self.dropped - self._drops_logged,
            self.link.last_error or "no answer yet",
            self.held,
            self.max_rows,
        )
        self._drops_logged = self.dropped
        self._drop_log_at = now + DROP_LOG_EVERY_S


class Frames:
    """Whole frames (4-byte big-endian length, marshal'd list of rows) out of bytes arriving in pieces."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[list[tuple]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER:
            end = HEADER + int.from_bytes(self.buf[:HEADER], "big")
            if len(self.buf) < end:
                break
            payload = bytes(self.buf[HEADER:end])
            del self.buf[:end]
            try:
                rows = marshal.loads(payload)
            except (EOFError, ValueError, TypeError):
                log.error("usage: an unreadable batch of %d bytes was skipped", len(payload))
                continue
            if isinstance(rows, list):
                out.append(rows)
            else:
                log.error("usage: a batch that is not a list of rows was skipped")
        return out


def serve(fd: int, producer: Producer) -> int:
    """Read frames from `fd` until it ends, sending each as it comes (every RETRY_S while Redis is away)."""
    frames = Frames()
    retry_at = 0.0
    while True:
        timeout = max(0.0, retry_at - time.monotonic()) if producer.queue else None
        readable, _, _ = select.select([fd], [], [], timeout)
        if readable:
            data = os.read(fd, READ_BYTES)
            if not data:
                break
            for rows in frames.feed(data):
                producer.add(rows)
        if producer.queue and time.monotonic() >= retry_at and not producer.flush():
            retry_at = time.monotonic() + RETRY_S
    deadline = time.monotonic() + FINAL_S
    while not producer.flush() and time.monotonic() < deadline:
        time.sleep(RETRY_S)
    if producer.held:
        log.error(
            "usage: %d rows not delivered: Redis unreachable for the last %.0f s", producer.held, FINAL_S
        )
    log.info(
        "usage producer stopped: %d rows sent, %d dropped", producer.sent, producer.dropped + producer.held
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """`--config PATH`: the Redis URL (it may hold a password) is read there, not from the command line."""
    ap = argparse.ArgumentParser(
        prog="python -m fortress.cluster.producer", description="usage rows to Redis"
    )
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cluster = load(args.config).cluster
    if not cluster.redis_url:
        log.error("usage producer: [cluster] redis_url is not set in %s", args.config)
        return 2
    client = sync_client(cluster.redis_url)
    producer = Producer(client, cluster.name, cluster.usage_buffer_rows, cluster.usage_stream_maxlen)
    return serve(sys.stdin.fileno(), producer)


if __name__ == "__main__":
    raise SystemExit(main())
