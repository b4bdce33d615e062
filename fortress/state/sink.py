"""The usage writer process: reads batches of usage rows from its stdin and stores them with UsageWriter.

The proxy hands rows over a pipe instead of writing SQLite itself: a writer thread in the proxy would
compete for the GIL with the event loop (measured: ~23 µs of proxy CPU per request, against ~1 µs
for marshalling a row into the pipe). Frames are a 4-byte big-endian length and a marshal'd list of
row tuples in usage column order. The process ignores SIGINT/SIGTERM and stops at end of input, so
a graceful stop of the proxy (which closes the pipe last) loses nothing.
"""

from __future__ import annotations

import asyncio
import marshal
import signal
import sys

from fortress.state.usage import COLUMNS, UsageEvent, UsageWriter

HEADER = 4


def frame(rows: list[tuple]) -> bytes:
    data = marshal.dumps(rows)
    return len(data).to_bytes(HEADER, "big") + data


async def serve(db_path: str) -> int:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    writer = UsageWriter(db_path)
    await writer.start()
    try:
        while True:
            try:
                size = int.from_bytes(await reader.readexactly(HEADER), "big")
                rows = marshal.loads(await reader.readexactly(size))
            except asyncio.IncompleteReadError:
                break  # the proxy closed the pipe: write what is left and stop
            for row in rows:
                writer.record(UsageEvent(**dict(zip(COLUMNS, row, strict=True))))
    finally:
        await writer.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    raise SystemExit(main())
