"""Where Fortress's processes write their logs: diagnostic logs (stderr, text or JSON, at a level from
`[logging]`) and the optional JSON access log, one line per request.

The access log is written by the usage writer process (fortress.state.sink) from the same batches as
the usage rows, right after they are committed, so the proxy's event loop never formats or writes it
and the log holds exactly the requests the usage table holds (a locked database delays lines with their
rows; a writer killed between a commit and the write loses that batch's lines, never doubles them).
A line carries no secret and no prompt: its fields are the usage row's (key id, never the key; the path
without its query string; Fortress's own short error text).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from operator import itemgetter

from fortress.config import LoggingConfig
from fortress.state.usage import COLUMNS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# a write of at most PIPE_BUF bytes to a pipe is never interleaved with another writer's (workers > 1)
CHUNK = 4096
REOPEN_CHECK_S = 1.0


@functools.lru_cache(maxsize=64)
def _second(s: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s))


def _iso(ts: float) -> str:
    """UTC time with milliseconds, as log shippers parse it: 2025-05-01T12:00:00.123Z."""
    return f"{_second(int(ts))}.{int(ts * 1000) % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message (and the traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


# libraries whose info and debug records name full URLs (a backend URL may carry user:password)
QUIET = ("httpx", "httpcore")


def configure(settings: LoggingConfig) -> None:
    """Send this process's logs to stderr at the configured level and in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.level.upper(), handlers=[handler], force=True)
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)


# ---- access log --------------------------------------------------------------------------------------

# usage column -> access log field, in the order the fields appear on a line
_FIELDS = {
    "ts": "time",
    "request_id": "request_id",
    "client_ip": "client_ip",
    "key_id": "key_id",
    "user_name": "user",
    "method": "method",
    "path": "path",
    "model": "model",
    "backend": "backend",
    "status": "status",
    "ttfb_ms": "ttfb_ms",
    "duration_ms": "duration_ms",
    "prompt_eval_count": "prompt_tokens",
    "eval_count": "completion_tokens",
    "bytes_in": "bytes_in",
    "bytes_out": "bytes_out",
    "stream": "stream",
    "error": "error",
}
_NAMES = tuple(_FIELDS.values())
_pick = itemgetter(*(COLUMNS.index(column) for column in _FIELDS))
_TIME, _TTFB, _DURATION, _STREAM = (_NAMES.index(n) for n in ("time", "ttfb_ms", "duration_ms", "stream"))
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def access_line(row: tuple) -> bytes:
    """One usage row (usage.COLUMNS order) as one access log line (pure)."""
    v = list(_pick(row))
    v[_TIME] = _iso(v[_TIME])
    if v[_TTFB] is not None:
        v[_TTFB] = round(v[_TTFB], 3)
    v[_DURATION] = round(v[_DURATION], 3)
    v[_STREAM] = bool(v[_STREAM])
    return _encode(dict(zip(_NAMES, v, strict=True))).encode() + b"\n"


def chunks(lines: Iterable[bytes], size: int = CHUNK) -> Iterable[bytes]:
    """Whole lines grouped into writes of at most `size` bytes (a longer line goes alone)."""
    buf: list[bytes] = []
    n = 0
    for line in lines:
        if buf and n + len(line) > size:
            yield b"".join(buf)
            buf, n = [], 0
        buf.append(line)
        n += len(line)
    if buf:
        yield b"".join(buf)


class AccessLog:
    """Appends access lines to stdout or a file; a file moved away (logrotate) is reopened by name."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self.fd = self._open() if path else sys.stdout.fileno()
        self._checked = time.monotonic()

    def _open(self) -> int:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def write(self, rows: list[tuple]) -> None:
        if self.path:
            self._follow_rotation()
        for data in chunks(access_line(r) for r in rows):
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]

    def _follow_rotation(self) -> None:
        now = time.monotonic()
        if now - self._checked < REOPEN_CHECK_S:
            return
        self._checked = now
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self.fd).st_ino
        except FileNotFoundError:
            moved = True
        if moved:
            os.close(self.fd)
            self.fd = self._open()

    def close(self) -> None:
        if self.path:
            os.close(self.fd)
