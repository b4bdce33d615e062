"""Exact limits across the worker processes of one machine: shared mmap'd tables under fcntl locks.

Contract: the parent calls `SharedLimiter.create(path)` once, before starting workers (it replaces the
file atomically, so a restart begins with empty logs and no leaked slots or lockouts); each worker then
opens `SharedLimiter(path)` (opening before a fork also works: POSIX record locks belong to the process).
It implements `fortress.pipeline.limits.Limiter` with the same `decide`, `merges` and
`bruteforce.step` as the other stores, so with N workers the answers are exactly those of one process.
One thread per process may use an instance: fcntl locks do not exclude threads of the same process.

Layout: a 64-byte header (magic, the two capacities, the log size, and at byte 32 the latest lockout end
of any address), then two open-addressing tables found by linear probing from blake2b(bucket) (a stable
hash: Python's `hash` differs per process):
- counters, 48 bytes each: hash (0 = never used), reusable-after time, failure window start, locked
  until, failures, slots held. Concurrency slots and failed keys live here.
- logs, 40 + 16 * RING bytes each (4 KiB): hash, window_s, index of the oldest entry, entries, their
  total, the newest entry's time; then a ring of RING (time, amount) entries. Rates and tokens live here.
Entries are never emptied, only reused once they hold nothing live, so a probe chain is never cut. If
`max_probe` entries in a row are live the call is let through and counted in `errors` (with the default
capacities that needs thousands of live keys). The file is sparse: only touched pages take memory.
A worker that dies while holding a slot leaks it until the next `create`; the lock itself is released by
the kernel when a process dies, so a crash never blocks the others.
`auth_locked` runs on every request: it reads the header's latest lockout end without the lock and looks
an address up only while some lockout is running.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from collections.abc import Callable, Iterator
from hashlib import blake2b
from typing import NamedTuple

from fortress.pipeline.bruteforce import step
from fortress.pipeline.limits import RING, Decision, decide, merges

_MAGIC = b"FRTLIM02"
_HEADER = struct.Struct("<8sIII")  # magic, counters, logs, ring
_LOCKED_UNTIL_AT = 32
_DOUBLE = struct.Struct("<d")
_HEADER_SIZE = 64
_COUNTER = struct.Struct("<Qdddqq")  # hash, reusable after, start, until, failures, slots
_LOG = struct.Struct("<QqIIqd")  # hash, window_s, head, entries, total, newest
_ENTRY = struct.Struct("<dq")  # time, amount
_LOG_SIZE = _LOG.size + RING * _ENTRY.size
_PEEK, _HIT, _ADD = 0, 1, 2
_EMPTY_COUNTER = (0.0, 0.0, 0.0, 0, 0)
_EMPTY_LOG = (0, 0, 0, 0, 0.0)


def _spent_counter(fields: tuple, now: float) -> bool:
    return fields[5] == 0 and fields[1] <= now  # no slot held, failures and lockout over


def _spent_log(fields: tuple, now: float) -> bool:
    return fields[3] == 0 or fields[5] + fields[1] <= now  # every entry has left its window


class _Table(NamedTuple):
    at: int
    capacity: int
    size: int
    struct: struct.Struct
    empty: tuple
    spent: Callable[[tuple, float], bool]


class SharedLimiter:
    def __init__(self, path: str, max_probe: int = 64) -> None:
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self._mm = mmap.mmap(self._fd, size)
        magic, counters, logs, ring = _HEADER.unpack_from(self._mm, 0)
        self._logs_at = _HEADER_SIZE + counters * _COUNTER.size
        if magic != _MAGIC or ring != RING or size != self._logs_at + logs * _LOG_SIZE:
            self.close()
            raise ValueError(f"{path}: not a Fortress limits table (recreate it with SharedLimiter.create)")
        # counters are spent with no slot held and nothing live; logs once every entry left its window
        self._counter_table = _Table(
            _HEADER_SIZE, counters, _COUNTER.size, _COUNTER, _EMPTY_COUNTER, _spent_counter
        )
        self._log_table = _Table(self._logs_at, logs, _LOG_SIZE, _LOG, _EMPTY_LOG, _spent_log)
        self._max_probe = max_probe
        self._hashes: dict[str, int] = {}
        self.errors = 0

    @staticmethod
    def create(path: str, counters: int = 32768, logs: int = 8192) -> None:
        """Write empty tables (48 B a counter, 4 KiB a log, sparse) and move them into place atomically."""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, counters, logs, RING).ljust(_HEADER_SIZE, b"\0"))
            f.truncate(_HEADER_SIZE + counters * _COUNTER.size + logs * _LOG_SIZE)
        os.replace(tmp, path)

    def close(self) -> None:
        self._mm.close()
        os.close(self._fd)

    def _hash(self, bucket: str) -> int:
        h = self._hashes.get(bucket)
        if h is None:
            h = int.from_bytes(blake2b(bucket.encode(), digest_size=8).digest(), "little") or 1
            if len(self._hashes) >= 65536:
                self._hashes.clear()
            self._hashes[bucket] = h
        return h

    # -- probing (caller holds the lock) ---------------------------------------------------------------
    def _find(self, h: int, table: _Table, now: float, claim: bool = True) -> int:
        """Offset of the bucket's entry; a never-used or spent one is claimed (if `claim`); -1 if none."""
        mm, capacity, start = self._mm, table.capacity, h % table.capacity
        reusable = -1
        for i in range(min(self._max_probe, capacity)):
            offset = table.at + ((start + i) % capacity) * table.size
            fields = table.struct.unpack_from(mm, offset)
            if fields[0] == h:
                return offset
            if fields[0] == 0:
                if reusable < 0:
                    reusable = offset
                break
            if reusable < 0 and table.spent(fields, now):
                reusable = offset
        if reusable >= 0 and claim:
            table.struct.pack_into(mm, reusable, h, *table.empty)
            return reusable
        return -1

    def _entries(self, base: int, head: int, count: int) -> Iterator[tuple[float, int]]:
        mm = self._mm
        for i in range(count):
            yield _ENTRY.unpack_from(mm, base + ((head + i) % RING) * _ENTRY.size)

    # -- rates and tokens ----------------------------------------------------------------------------
    def _log_op(self, bucket: str, limit: int, window_s: int, now: float, cost: int, mode: int) -> Decision:
        """One lock round trip: expire, decide, count."""
        window_s = max(1, window_s)
        h = self._hash(bucket)
        fd, mm = self._fd, self._mm
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            offset = self._find(h, self._log_table, now)
            if offset < 0:
                self.errors += 1
                return Decision(True, limit, limit, float(window_s), 0.0)
            _, stored_window, head, count, total, newest = _LOG.unpack_from(mm, offset)
            if stored_window != window_s:
                head = count = total = 0
                newest = 0.0
            base = offset + _LOG.size
            cutoff = now - window_s
            oldest = None
            while count:
                stamp, amount = _ENTRY.unpack_from(mm, base + head * _ENTRY.size)
                if stamp > cutoff:
                    oldest = stamp
                    break
                total -= amount
                head = (head + 1) % RING
                count -= 1
            if mode == _ADD:
                allowed = True
                decision = Decision(True, limit, 0, 0.0, 0.0)
            else:
                log = () if total + cost <= limit else self._entries(base, head, count)  # read if refused
                decision = decide(limit, window_s, now, cost, total, oldest, log, mode == _HIT)
                allowed = mode == _HIT and decision.allowed
            if allowed:
                merge_limit = None if mode == _ADD else limit
                if count and (count >= RING or merges(newest, now, window_s, merge_limit)):
                    last = base + ((head + count - 1) % RING) * _ENTRY.size
                    stamp, amount = _ENTRY.unpack_from(mm, last)
                    _ENTRY.pack_into(mm, last, max(stamp, now), amount + cost)
                else:
                    _ENTRY.pack_into(mm, base + ((head + count) % RING) * _ENTRY.size, max(newest, now), cost)
                    count += 1
                total += cost
                newest = max(newest, now)
            _LOG.pack_into(mm, offset, h, window_s, head, count, total, newest)
            return decision
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def hit(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._log_op(bucket, limit, window_s, now, cost, _HIT)

    def peek(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._log_op(bucket, limit, window_s, now, cost, _PEEK)

    def add(self, bucket: str, amount: int, window_s: int, now: float) -> None:
        self._log_op(bucket, 0, window_s, now, amount, _ADD)

    # -- concurrency ---------------------------------------------------------------------------------
    def _slot_op(self, bucket: str, delta: int, max_concurrent: int) -> bool:
        h = self._hash(bucket)
        fd, mm = self._fd, self._mm
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            offset = self._find(h, self._counter_table, 0.0)
            if offset < 0:
                self.errors += 1
                return True
            key, after, start, until, failures, slots = _COUNTER.unpack_from(mm, offset)
            if delta > 0 and slots >= max_concurrent:
                return False
            slots = max(0, slots + delta)
            _COUNTER.pack_into(mm, offset, key, after, start, until, failures, slots)
            return True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def acquire_slot(self, bucket: str, max_concurrent: int) -> bool:
        return self._slot_op(bucket, 1, max_concurrent)

    def release_slot(self, bucket: str) -> None:
        self._slot_op(bucket, -1, 0)

    # -- failed keys ---------------------------------------------------------------------------------
    def auth_failure(self, ip: str, limit: int, window_s: float, lockout_s: float, now: float) -> float:
        h = self._hash(f"a:{ip}")
        fd, mm = self._fd, self._mm
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            offset = self._find(h, self._counter_table, now)
            if offset < 0:
                self.errors += 1
                return 0.0
            key, _, start, until, failures, slots = _COUNTER.unpack_from(mm, offset)
            start, failures, until = step(start, failures, until, now, limit, window_s, lockout_s)
            _COUNTER.pack_into(mm, offset, key, max(start + window_s, until), start, until, failures, slots)
            if until > _DOUBLE.unpack_from(mm, _LOCKED_UNTIL_AT)[0]:
                _DOUBLE.pack_into(mm, _LOCKED_UNTIL_AT, until)
            return max(0.0, until - now)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def auth_locked(self, ip: str, now: float) -> float:
        mm = self._mm
        if _DOUBLE.unpack_from(mm, _LOCKED_UNTIL_AT)[0] <= now:
            return 0.0  # no address is locked anywhere: no lock, no lookup
        h = self._hash(f"a:{ip}")
        fd = self._fd
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            offset = self._find(h, self._counter_table, now, claim=False)
            until = _COUNTER.unpack_from(mm, offset)[3] if offset >= 0 else 0.0
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        return until - now if until > now else 0.0
