"""Exact limits across the worker processes of one machine: a shared mmap'd hash table under fcntl locks.

Contract: the parent calls `SharedLimiter.create(path)` once, before starting workers (it replaces the
file atomically, so a restart begins with empty counters and no leaked slots); each worker then opens
`SharedLimiter(path)` (opening before a fork also works: POSIX record locks belong to the process).
It implements `fortress.pipeline.limits.Limiter` with the same `decide` as the other stores, so with
N workers the counts are exactly those of one process. One thread per process may use an instance:
fcntl locks do not exclude threads of the same process.

Layout: a 64-byte header (magic, capacity, entry size), then `capacity` entries of six 64-bit fields:
bucket hash (0 = never used), window_s, window index, current count, previous count, slots held.
Buckets are found by linear probing from blake2b(bucket) (a stable hash: Python's `hash` differs per
process). Entries are never emptied, only reused once both windows are over and no slot is held, so a
probe chain is never cut. If `max_probe` entries in a row are live the call is let through and counted in
`errors` (with the default capacity that needs tens of thousands of live buckets).
A worker that dies while holding a slot leaks it until the next `create`; the lock itself is released by
the kernel when a process dies, so a crash never blocks the others.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
from hashlib import blake2b

from fortress.pipeline.limits import Decision, decide, roll

_MAGIC = b"FRTLIM01"
_HEADER = struct.Struct("<8sII")
_HEADER_SIZE = 64
_ENTRY = struct.Struct("<Qqqqqq")  # hash, window_s, idx, curr, prev, slots
_ENTRY_SIZE = _ENTRY.size


class SharedLimiter:
    def __init__(self, path: str, max_probe: int = 64) -> None:
        self._fd = os.open(path, os.O_RDWR)
        size = os.fstat(self._fd).st_size
        self._mm = mmap.mmap(self._fd, size)
        magic, capacity, entry_size = _HEADER.unpack_from(self._mm, 0)
        if magic != _MAGIC or entry_size != _ENTRY_SIZE or size != _HEADER_SIZE + capacity * entry_size:
            self.close()
            raise ValueError(f"{path}: not a Fortress limits table (recreate it with SharedLimiter.create)")
        self._capacity = capacity
        self._max_probe = min(max_probe, capacity)
        self._hashes: dict[str, int] = {}
        self.errors = 0

    @staticmethod
    def create(path: str, capacity: int = 32768) -> None:
        """Write an empty table (capacity * 48 bytes) and move it into place atomically."""
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, capacity, _ENTRY_SIZE).ljust(_HEADER_SIZE, b"\0"))
            f.truncate(_HEADER_SIZE + capacity * _ENTRY_SIZE)
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

    def _find(self, h: int, now: float) -> int:
        """Offset of the bucket's entry, claiming a free or expired one if needed; -1 if the table is full.

        Caller holds the lock.
        """
        mm, capacity = self._mm, self._capacity
        start = h % capacity
        reusable = -1
        for i in range(self._max_probe):
            offset = _HEADER_SIZE + ((start + i) % capacity) * _ENTRY_SIZE
            key, window_s, idx, _, _, slots = _ENTRY.unpack_from(mm, offset)
            if key == h:
                return offset
            if key == 0:
                if reusable < 0:
                    reusable = offset
                break
            if reusable < 0 and slots == 0 and (idx + 2) * window_s <= now:
                reusable = offset
        if reusable >= 0:
            _ENTRY.pack_into(mm, reusable, h, 0, 0, 0, 0, 0)
        return reusable

    def _window_op(
        self, bucket: str, limit: int, window_s: int, now: float, cost: int, mode: int
    ) -> Decision:
        """mode 0 = peek, 1 = hit, 2 = add; one lock round trip."""
        window_s = max(1, window_s)
        h = self._hash(bucket)
        fd, mm = self._fd, self._mm
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            offset = self._find(h, now)
            if offset < 0:
                self.errors += 1
                return Decision(True, limit, limit, float(window_s), 0.0)
            _, stored_window, stored_idx, curr, prev, slots = _ENTRY.unpack_from(mm, offset)
            idx = int(now // window_s)
            if stored_window != window_s:
                curr = prev = 0
            elif stored_idx != idx:
                curr, prev = roll(stored_idx, curr, prev, idx)
            if mode == 2:
                _ENTRY.pack_into(mm, offset, h, window_s, idx, curr + cost, prev, slots)
                return Decision(True, limit, 0, 0.0, 0.0)
            decision = decide(limit, window_s, now, idx, curr, prev, cost, mode == 1)
            if mode == 1 and decision.allowed:
                _ENTRY.pack_into(mm, offset, h, window_s, idx, curr + cost, prev, slots)
            return decision
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def hit(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._window_op(bucket, limit, window_s, now, cost, 1)

    def peek(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._window_op(bucket, limit, window_s, now, cost, 0)

    def add(self, bucket: str, amount: int, window_s: int, now: float) -> None:
        self._window_op(bucket, 0, window_s, now, amount, 2)

    def _slot_op(self, bucket: str, delta: int, max_concurrent: int) -> bool:
        h = self._hash(bucket)
        fd, mm = self._fd, self._mm
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            # now=0: a slot operation never treats a window as expired, it only reuses never-used entries
            offset = self._find(h, 0.0)
            if offset < 0:
                self.errors += 1
                return True
            key, window_s, idx, curr, prev, slots = _ENTRY.unpack_from(mm, offset)
            if delta > 0 and slots >= max_concurrent:
                return False
            slots = max(0, slots + delta)
            _ENTRY.pack_into(mm, offset, key, window_s, idx, curr, prev, slots)
            return True
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)

    def acquire_slot(self, bucket: str, max_concurrent: int) -> bool:
        return self._slot_op(bucket, 1, max_concurrent)

    def release_slot(self, bucket: str) -> None:
        self._slot_op(bucket, -1, 0)
