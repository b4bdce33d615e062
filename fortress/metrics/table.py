"""The shared metrics table: one mmap'd file, one slot per worker, summed by whoever scrapes.

Contract: the parent calls `MetricsTable.create(path)` once, before starting workers (it replaces the
file, so a restart of the proxy begins at zero, which Prometheus reads as a counter reset, as it does for
any restarted process: `process_start_time_seconds` changes with it). Each worker, after the fork, opens
`MetricsTable(path)` and `claim()`s a slot; only that process writes it, without locks (`Recorder`).
`collect()`, from any process, sums every slot into `Totals` (see `layout` for how each word is summed).

Liveness without pids: a slot's owner holds an fcntl lock on one byte for its lifetime; the kernel drops
it when the process dies, so a live owner is one whose byte cannot be locked (pid reuse cannot fool it).
`claim()` folds every dead slot's counters into the retired slot 0 and frees it, under the table's
exclusive lock; `collect()` holds the shared lock, so it sees a dead worker's counts exactly once,
before or after the fold, and totals never go down while the file lives.
fcntl locks belong to a process and any close of the file drops them all: use one MetricsTable per
process, and keep it open as long as the slot is in use.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from fortress.metrics import layout as L

_MAGIC = b"FRTMET01"
_FILE_HEADER = struct.Struct("<8sIId")  # magic, slots, slot bytes, created at (unix time)
_FILE_HEADER_BYTES = 4096
_GLOBAL_LOCK = 64  # byte offsets locked (never written): the table, then one byte per slot
_LIVE_LOCK = 128
_SEQ_WAIT_S = 0.0005  # a publish takes ~50 µs; the reader may be a worker's event loop: wait 50 ms at most
_SEQ_TRIES = 100


class TableFull(RuntimeError):
    """Every slot belongs to a live process."""


class Names:
    """One label table of a slot: name -> row offset (in words from the slot's start).

    Rows are handed out in order; the last row is kept for `other`, where every name beyond the capacity
    is counted (those names are not cached, so `rows` stays bounded). A name is written before its row is
    first used, the length byte last, so a reader sees no name or the whole name.
    """

    __slots__ = ("_at", "_capacity", "_mm", "_names_at", "_stride", "_used", "rows")

    def __init__(self, mm: mmap.mmap, base: int, rows_at: int, stride: int, names_at: int, capacity: int):
        self._mm = mm
        self._at = rows_at
        self._stride = stride
        self._names_at = base + names_at
        self._capacity = capacity
        self.rows: dict[str | None, int] = {}
        self._used = 0  # rows handed out before the `other` row
        for i, name in enumerate(read_names(mm, self._names_at, capacity)):
            if name is not None:
                self.rows.setdefault(name, rows_at + i * stride)
                if i < capacity - 1:
                    self._used = i + 1

    def row(self, name: str | None, fallback: str = L.OTHER) -> int:
        """The row for `name` (None counts as `fallback`), assigning one on first sight."""
        at = self.rows.get(name)
        if at is not None:
            return at
        text = fallback if name is None else name
        data = text.encode()
        used = self._used
        if text != L.OTHER and len(data) < L.NAME_BYTES and used < self._capacity - 1:
            self._write(used, data)
            self._used = used + 1
            at = self.rows[name] = self._at + used * self._stride
            return at
        at = self.rows.get(L.OTHER)
        if at is None:
            self._write(self._capacity - 1, L.OTHER.encode())
            at = self.rows[L.OTHER] = self._at + (self._capacity - 1) * self._stride
        return at

    def _write(self, index: int, data: bytes) -> None:
        offset = self._names_at + index * L.NAME_BYTES
        self._mm[offset + 1 : offset + 1 + len(data)] = data
        self._mm[offset] = len(data)


def read_names(mm: mmap.mmap, at: int, count: int) -> list[str | None]:
    out: list[str | None] = []
    for i in range(count):
        offset = at + i * L.NAME_BYTES
        n = mm[offset]
        out.append(mm[offset + 1 : offset + 1 + n].decode("utf-8", "replace") if n else None)
    return out


@dataclass
class Reading:
    """One slot as read: header words (doubles decoded) and rows by name."""

    header: list[float]
    routes: dict[str, list[float]]
    models: dict[str, list[float]]
    backends: dict[str, list[float]]


@dataclass
class Totals:
    """Every slot summed: what the exposition is rendered from."""

    started_at: float
    workers: int = 0
    inflight: int = 0
    refused: list[int] = field(default_factory=lambda: [0] * len(L.REFUSALS))
    usage_written: int = 0
    usage_dropped: int = 0
    usage_pending: int = 0
    usage_restarts: int = 0
    cpu_seconds: float = 0.0
    rss_bytes: int = 0
    snapshot_version: int | None = None  # from the freshest live slot that published
    snapshot_loaded_at: float | None = None
    routes: dict[str, list[float]] = field(default_factory=dict)
    models: dict[str, list[float]] = field(default_factory=dict)
    backends: dict[str, list[float]] = field(default_factory=dict)

    def add_counters(self, r: Reading) -> None:
        h = r.header
        for i in range(len(L.REFUSALS)):
            self.refused[i] += int(h[L.H_REFUSED + i])
        self.usage_written += int(h[L.H_USAGE_WRITTEN])
        self.usage_dropped += int(h[L.H_USAGE_DROPPED])
        self.usage_restarts += int(h[L.H_USAGE_RESTARTS])
        self.cpu_seconds += h[L.H_CPU]
        for name, row in r.routes.items():
            _add(self.routes, name, row)
        for name, row in r.models.items():
            _add(self.models, name, row)

    def add_gauges(self, r: Reading) -> None:
        """A live slot's own gauges; call in order of publish time, so the freshest sets the globals."""
        h = r.header
        self.workers += 1
        self.inflight += int(h[L.H_INFLIGHT])
        self.usage_pending += int(h[L.H_USAGE_PENDING])
        self.rss_bytes += int(h[L.H_RSS])
        if h[L.H_PUBLISHED_AT]:
            self.snapshot_version = int(h[L.H_SNAPSHOT_VERSION])
            self.snapshot_loaded_at = h[L.H_SNAPSHOT_LOADED_AT]
        for name, row in r.backends.items():
            mine = self.backends.get(name)
            if mine is None:
                self.backends[name] = list(row)
                continue
            mine[L.B_UP], mine[L.B_BREAKER] = row[L.B_UP], row[L.B_BREAKER]
            for k in (L.B_OUTSTANDING, L.B_POOL_IDLE, L.B_POOL_ACTIVE):
                mine[k] += row[k]


def _add(into: dict[str, list[float]], name: str, row: list[float]) -> None:
    mine = into.get(name)
    if mine is None:
        into[name] = list(row)
    else:
        for k, v in enumerate(row):
            mine[k] += v


class MetricsTable:
    """One process's view of the table: claim a slot, fold dead ones, collect them all."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(self._fd).st_size
            if size < _FILE_HEADER_BYTES:
                raise ValueError(f"{path}: not a Fortress metrics table (too short)")
            self.mm = mmap.mmap(self._fd, size)
        except (OSError, ValueError):
            os.close(self._fd)
            raise
        magic, slots, slot_bytes, created_at = _FILE_HEADER.unpack_from(self.mm, 0)
        if magic != _MAGIC or slot_bytes != L.SLOT_BYTES or size != _FILE_HEADER_BYTES + slots * slot_bytes:
            self.mm.close()
            os.close(self._fd)
            raise ValueError(f"{path}: not a Fortress metrics table of this version (recreate it)")
        self.slots = slots
        self.started_at = created_at
        self.q = memoryview(self.mm).cast("q")
        self.d = memoryview(self.mm).cast("d")
        self.own: int | None = None

    @staticmethod
    def create(path: str, workers: int = 1) -> None:
        """Write an empty table (slot 0 for retired workers, room for restarts) and move it into place."""
        slots = 1 + max(8, 2 * workers)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_FILE_HEADER.pack(_MAGIC, slots, L.SLOT_BYTES, time.time()))
            f.truncate(_FILE_HEADER_BYTES + slots * L.SLOT_BYTES)  # sparse: untouched pages cost nothing
        os.replace(tmp, path)

    def close(self) -> None:
        """Release the slot (it becomes a dead slot, folded on the next claim) and the mapping."""
        self.q.release()
        self.d.release()
        self.mm.close()
        os.close(self._fd)

    def base(self, slot: int) -> int:
        """The slot's first byte."""
        return _FILE_HEADER_BYTES + slot * L.SLOT_BYTES

    # -- ownership -----------------------------------------------------------------------------------------
    def claim(self) -> int:
        """Take a free slot for this process (after the fork), folding the slots of dead workers first."""
        if self.own is not None:
            raise RuntimeError("this process already owns a slot")
        fd = self._fd
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, _GLOBAL_LOCK)
        try:
            free = None
            for slot in range(1, self.slots):
                if self._pid(slot) and self._try_lock(slot, fcntl.LOCK_EX):
                    self._fold(slot)
                    fcntl.lockf(fd, fcntl.LOCK_UN, 1, _LIVE_LOCK + slot)
                if free is None and not self._pid(slot):
                    free = slot
            if free is None or not self._try_lock(free, fcntl.LOCK_EX):
                raise TableFull(f"{self.path}: all {self.slots - 1} metrics slots belong to live workers")
            base = self.base(free) // 8
            self.d[base + L.H_CLAIMED_AT] = time.time()
            self.q[base + L.H_PID] = os.getpid()
            self.own = free
            return free
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, _GLOBAL_LOCK)

    def _pid(self, slot: int) -> int:
        return self.q[self.base(slot) // 8 + L.H_PID]

    def _try_lock(self, slot: int, mode: int) -> bool:
        """Lock a slot's liveness byte without waiting: True means nobody alive holds it."""
        try:
            fcntl.lockf(self._fd, mode | fcntl.LOCK_NB, 1, _LIVE_LOCK + slot)
        except OSError:
            return False
        return True

    def _alive(self, slot: int) -> bool:
        if slot == self.own:
            return True
        if not self._try_lock(slot, fcntl.LOCK_SH):
            return True
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _LIVE_LOCK + slot)
        return False

    def _fold(self, slot: int) -> None:
        """Add a dead slot's counters to the retired slot 0 and clear it. Caller holds the exclusive lock."""
        r = self.read(slot, live=False)
        base0 = self.base(0)
        q, d, w0 = self.q, self.d, base0 // 8
        for i in L.HEADER_COUNTERS:
            if i in L.HEADER_FLOATS:
                d[w0 + i] += r.header[i]
            else:
                q[w0 + i] += int(r.header[i])
        routes = Names(self.mm, base0, L.ROUTES_AT, L.ROUTE_STRIDE, L.ROUTE_NAMES_AT, L.ROUTES)
        models = Names(self.mm, base0, L.MODELS_AT, L.MODEL_STRIDE, L.MODEL_NAMES_AT, L.MODELS)
        for names, rows, floats in ((routes, r.routes, L.ROUTE_FLOATS), (models, r.models, frozenset())):
            for name, row in rows.items():
                at = w0 + names.row(name)
                for k, v in enumerate(row):
                    if k in floats:
                        d[at + k] += v
                    elif v:
                        q[at + k] += int(v)
        start = self.base(slot)
        self.mm[start : start + L.SLOT_BYTES] = bytes(L.SLOT_BYTES)

    # -- reading -------------------------------------------------------------------------------------------
    def read(self, slot: int, live: bool) -> Reading:
        """One slot's figures. Counted rows are read as they are (each word is whole); the published words
        (header, backend rows) of a live slot under its seqlock, retried while `publish` rewrites them."""
        q, mm = self.q, self.mm
        base = self.base(slot)
        w = base // 8
        routes = self._rows(
            w + L.ROUTES_AT, L.ROUTE_STRIDE, L.ROUTE_FLOATS, read_names(mm, base + L.ROUTE_NAMES_AT, L.ROUTES)
        )
        models = self._rows(
            w + L.MODELS_AT, L.MODEL_STRIDE, (), read_names(mm, base + L.MODEL_NAMES_AT, L.MODELS)
        )
        for _ in range(_SEQ_TRIES if live else 1):
            seq = q[w + L.H_SEQ]
            if seq & 1:
                time.sleep(_SEQ_WAIT_S)
                continue
            header, backends = self._published(slot)
            if q[w + L.H_SEQ] == seq:
                break
        else:  # dead, or a writer stuck mid-publish: take the words as they are
            header, backends = self._published(slot)
        return Reading(header, routes, models, backends)

    def _published(self, slot: int) -> tuple[list[float], dict[str, list[float]]]:
        base = self.base(slot)
        w = base // 8
        header: list[float] = self.q[w : w + L.HEADER_WORDS].tolist()
        for i in L.HEADER_FLOATS:
            header[i] = self.d[w + i]
        count = min(int(header[L.H_BACKENDS]), L.BACKENDS)
        names = read_names(self.mm, base + L.BACKEND_NAMES_AT, count)
        return header, self._rows(w + L.BACKENDS_AT, L.BACKEND_STRIDE, (), names)

    def _rows(
        self, at: int, stride: int, floats: Collection[int], names: list[str | None]
    ) -> dict[str, list[float]]:
        rows: dict[str, list[float]] = {}
        for i, name in enumerate(names):
            if name is None:
                continue
            start = at + i * stride
            row: list[float] = self.q[start : start + stride].tolist()
            for k in floats:
                row[k] = self.d[start + k]
            _add(rows, name, row)  # `other` and a real name "other" share a label
        return rows

    def collect(self) -> Totals:
        """Sum every slot: counters from all, gauges from the live ones, globals from the freshest."""
        totals = Totals(self.started_at)
        live: list[Reading] = []
        fcntl.lockf(self._fd, fcntl.LOCK_SH, 1, _GLOBAL_LOCK)
        try:
            for slot in range(self.slots):
                if slot and not self._pid(slot):
                    continue
                alive = slot != 0 and self._alive(slot)
                reading = self.read(slot, alive)
                totals.add_counters(reading)
                if alive:
                    live.append(reading)
        finally:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, _GLOBAL_LOCK)
        for reading in sorted(live, key=lambda r: r.header[L.H_PUBLISHED_AT]):
            totals.add_gauges(reading)
        return totals


def read_totals(path: str) -> Totals | None:
    """Every slot summed, for a process that owns none (the admin's dashboard): None without a table.
    Never call it from a worker: its close would drop that process's slot lock (see above)."""
    try:
        table = MetricsTable(path)
    except (OSError, ValueError):
        return None
    try:
        return table.collect()
    finally:
        table.close()
