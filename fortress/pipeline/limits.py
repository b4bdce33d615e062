"""Rate, token and concurrency limits (DESIGN §2 stage 7), and the failed-key counts of the lockout.

Contract (`Limiter`): `hit` counts `cost` against `limit` per `window_s` if it fits and says so; `peek`
answers the same question without counting; `add` counts unconditionally (tokens known only after a
response); `acquire_slot`/`release_slot` bound requests in flight; `auth_failure`/`auth_locked` count
failed keys per address for `fortress.pipeline.bruteforce`, so the lockout is shared exactly like the
limits. Callers pass the clock (`now`, seconds since the epoch: every worker and node must agree). No
method raises on request input; a store failure is counted in `errors` and never refuses by itself
(RedisLimiter then counts in this process until Redis answers again).

Algorithm: a sliding log. A bucket keeps the times (and amounts) of what it counted; an amount leaves the
window `window_s` after it was counted, and `hit` admits when what is still in the window plus `cost`
fits `limit`. So no window-long span ever holds more than `limit` admitted (half-open spans
`(t - window_s, t]`): exact, across workers and nodes, whatever the arrival pattern. `Retry-After` is the
time until enough of the log has left the window for the cost to fit: the real time to the next free slot.

Bound: a log holds at most `RING` (256) entries. A limit of up to `RING` at cost 1 (request rates as people
set them) keeps one entry per request: exact to the microsecond. Above that (`100000/1d`, and token
budgets, whose amounts are arbitrary) what is counted within one slot of `window_s / (RING - 1)` shares one
entry stamped with its latest time: the slot's amounts leave the window together, when the last of them
does. The log so never under-counts (the span bound above still holds exactly), and a client waits at
most one slot longer than an exact log would make it wait (0.24 s for a minute window, 14 s for an hour,
5.6 min for a day).

Implementations: `LocalLimiter` (one process, dicts), `fortress.pipeline.shm.SharedLimiter` (N worker
processes on one machine, a shared mmap'd table), `RedisLimiter` (many machines, one Lua script per call,
so each decision is atomic in Redis). All three share `decide` and `merges`, so they answer identically.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from fortress.pipeline.bruteforce import AuthFailures

if TYPE_CHECKING:
    import redis

RING = 256  # entries per log; a limit up to this is exact at cost 1


class Decision(NamedTuple):
    allowed: bool
    limit: int
    remaining: int  # whole requests (or tokens) left in the window after this one
    reset_s: float  # seconds until the oldest counted amount leaves the window (window_s when none)
    retry_after_s: float  # when refused: seconds until the same cost fits; 0.0 when allowed


class Limiter(Protocol):
    errors: int

    def hit(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision: ...

    def peek(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision: ...

    def add(self, bucket: str, amount: int, window_s: int, now: float) -> None: ...

    def acquire_slot(self, bucket: str, max_concurrent: int) -> bool: ...

    def release_slot(self, bucket: str) -> None: ...

    def auth_failure(self, ip: str, limit: int, window_s: float, lockout_s: float, now: float) -> float: ...

    def auth_locked(self, ip: str, now: float) -> float: ...


def merges(newest: float, now: float, window_s: int, limit: int | None) -> bool:
    """Does an amount counted at `now` join the newest entry (stamped `newest`) rather than open one?

    `limit` None is `add` (tokens). Only above `RING`, and only within one slot of the window.
    """
    if limit is not None and limit <= RING:
        return False
    slot = window_s / (RING - 1)
    return newest // slot == now // slot


def decide(
    limit: int,
    window_s: int,
    now: float,
    cost: int,
    total: int,
    oldest: float | None,
    log: Iterable[tuple[float, int]],
    commit: bool,
) -> Decision:
    """The decision for a log already rid of what left the window.

    `total` is what the log holds, `oldest` its first entry's time (None when empty), `log` its entries
    oldest first (read only when refused); `commit` = the cost is counted if it fits.
    """
    reset = float(window_s) if oldest is None else oldest + window_s - now
    if total + cost <= limit:
        return Decision(True, limit, limit - total - (cost if commit else 0), reset, 0.0)
    need = total + cost - limit  # what must leave the window before the cost fits
    retry = float(window_s)
    freed = 0
    for stamp, amount in log:
        retry = stamp + window_s - now  # a cost above the limit waits for everything to leave
        freed += amount
        if freed >= need:
            break
    return Decision(False, limit, max(0, limit - total), reset, max(0.0, retry))


class _Log:
    """One bucket of the local store: entries [time, amount], oldest first, and their sum."""

    __slots__ = ("entries", "total", "window_s")

    def __init__(self, window_s: int) -> None:
        self.window_s = window_s
        self.entries: deque[list[Any]] = deque()
        self.total = 0

    def expire(self, now: float) -> None:
        entries, cutoff = self.entries, now - self.window_s
        while entries and entries[0][0] <= cutoff:
            self.total -= entries.popleft()[1]

    def count(self, amount: int, now: float, limit: int | None) -> None:
        entries = self.entries
        if entries and (len(entries) >= RING or merges(entries[-1][0], now, self.window_s, limit)):
            last = entries[-1]
            last[0] = max(last[0], now)
            last[1] += amount
        else:
            entries.append([max(now, entries[-1][0]) if entries else now, amount])
        self.total += amount


class LocalLimiter:
    """In-process store for `workers = 1`: a dict of logs, one per bucket."""

    def __init__(self, max_buckets: int = 100_000) -> None:
        self._logs: dict[str, _Log] = {}
        self._slots: dict[str, int] = {}
        self._max_buckets = max_buckets
        self._auth = AuthFailures()
        self.errors = 0
        # asked on every request with a key (bruteforce.Lockout.locked): the store's own method, one call
        self.auth_locked = self._auth.locked

    def _log(self, bucket: str, window_s: int, now: float) -> _Log:
        log = self._logs.get(bucket)
        if log is None or log.window_s != window_s:
            if len(self._logs) >= self._max_buckets:
                self._sweep(now)
            log = self._logs[bucket] = _Log(window_s)
        else:
            log.expire(now)
        return log

    def _sweep(self, now: float) -> None:
        """Drop logs whose entries have all left their window; if none, the oldest half."""
        stale = [
            b for b, log in self._logs.items() if not log.entries or log.entries[-1][0] <= now - log.window_s
        ]
        for bucket in stale or list(self._logs)[: len(self._logs) // 2]:
            del self._logs[bucket]

    def _decide(self, log: _Log, limit: int, now: float, cost: int, commit: bool) -> Decision:
        entries = log.entries
        oldest = entries[0][0] if entries else None
        return decide(limit, log.window_s, now, cost, log.total, oldest, entries, commit)

    def hit(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        log = self._log(bucket, max(1, window_s), now)
        decision = self._decide(log, limit, now, cost, True)
        if decision.allowed:
            log.count(cost, now, limit)
        return decision

    def peek(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._decide(self._log(bucket, max(1, window_s), now), limit, now, cost, False)

    def add(self, bucket: str, amount: int, window_s: int, now: float) -> None:
        self._log(bucket, max(1, window_s), now).count(amount, now, None)

    def acquire_slot(self, bucket: str, max_concurrent: int) -> bool:
        held = self._slots.get(bucket, 0)
        if held >= max_concurrent:
            return False
        self._slots[bucket] = held + 1
        return True

    def release_slot(self, bucket: str) -> None:
        held = self._slots.get(bucket, 0)
        if held <= 1:
            self._slots.pop(bucket, None)
        else:
            self._slots[bucket] = held - 1

    def auth_failure(self, ip: str, limit: int, window_s: float, lockout_s: float, now: float) -> float:
        return self._auth.failure(ip, limit, window_s, lockout_s, now)


# One script for hit, peek and add: expire, decide, count, all atomic inside Redis, with the same rules
# as `decide` and `merges`. A bucket is a hash (w: window, n: total) and a list of "time amount" entries,
# oldest first; times travel as Python's repr of the float, so no precision is lost. It answers
# {allowed, total before counting, oldest time or '', the entries when refused} for Python's `decide`.
_LOG_LUA = """
local mode, limit, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local stamp, cost, ring = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local now = tonumber(stamp)
local meta, log = KEYS[1], KEYS[2]
local v = redis.call('HMGET', meta, 'w', 'n')
local total = 0
if tonumber(v[1]) == window then total = tonumber(v[2]) else redis.call('DEL', log) end
while true do
  local head = redis.call('LINDEX', log, 0)
  if not head then break end
  local t, a = string.match(head, '(%S+) (%S+)')
  if tonumber(t) > now - window then break end
  redis.call('LPOP', log)
  total = total - tonumber(a)
end
local allowed = mode == 'add' or total + cost <= limit
local first = redis.call('LINDEX', log, 0)
local oldest = ''
if first then oldest = string.match(first, '(%S+) ') end
local reply = {allowed and 1 or 0, total, oldest}
if not allowed then
  for _, e in ipairs(redis.call('LRANGE', log, 0, -1)) do table.insert(reply, e) end
end
if allowed and mode ~= 'peek' then
  local n = redis.call('LLEN', log)
  local last = redis.call('LINDEX', log, -1)
  local merge = false
  local lt, la
  if last then
    lt, la = string.match(last, '(%S+) (%S+)')
    if tonumber(lt) > now then stamp = lt end
    if n >= ring then
      merge = true
    elseif mode == 'add' or limit > ring then
      local slot = window / (ring - 1)
      merge = math.floor(tonumber(lt) / slot) == math.floor(now / slot)
    end
  end
  if merge then
    redis.call('LSET', log, -1, stamp .. ' ' .. string.format('%d', tonumber(la) + cost))
  else
    redis.call('RPUSH', log, stamp .. ' ' .. string.format('%d', cost))
  end
  redis.call('HSET', meta, 'w', window, 'n', total + cost)
  redis.call('PEXPIRE', meta, window * 1000 + 1000)
  redis.call('PEXPIRE', log, window * 1000 + 1000)
elseif tonumber(v[1]) == window then
  redis.call('HSET', meta, 'n', total)
end
return reply
"""

_ACQUIRE_LUA = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""

_RELEASE_LUA = """
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held > 1 then return redis.call('DECR', KEYS[1]) end
redis.call('DEL', KEYS[1])
return 0
"""

# One failed key from an address (bruteforce.step, the same rules): the count per window, and the
# lockout, also kept in a sorted set of locked addresses (score = until) that every node reads. Times
# are written with 17 digits, so they read back as the very same doubles Python computed.
_AUTH_LUA = """
local limit, window, lockout = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now, ip = tonumber(ARGV[4]), ARGV[5]
local v = redis.call('HMGET', KEYS[1], 's', 'c', 'u')
local start, count, untl = tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0
local function exact(x) return string.format('%.17g', x) end
if untl > now then return exact(untl) end
if count == 0 or now - start >= window then start, count = now, 0 end
count = count + 1
if count >= limit then
  untl = now + lockout
  start, count = untl, 0
  redis.call('ZADD', KEYS[2], exact(untl), ip)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', exact(now))
end
redis.call('HSET', KEYS[1], 's', exact(start), 'c', count, 'u', exact(untl))
redis.call('PEXPIRE', KEYS[1], math.ceil((math.max(start + window, untl) - now) * 1000) + 1000)
return exact(untl)
"""


class RedisLimiter:
    """Shared across machines through one Redis (sync client: one round trip per call, atomic by Lua).

    Every node must run a synchronised clock (NTP): logs are stamped with the caller's `now`, so tests can
    drive time. A slot held by a crashed process expires after `slot_ttl_s` (refreshed on every acquire),
    so leaks heal; keep it above the longest request. After a Redis error the limiter lets requests
    through without asking Redis for `down_s`, so an outage costs one timeout per `down_s`, not one per
    request. Failed keys are counted in Redis exactly; each node reads the set of locked addresses at
    most every `locks_every_s`, so a lockout reaches every node within that time (at once on the node
    that counted the failure that locked it).

    While Redis is unreachable every decision is made by `fallback`: the machine's shared table when
    the proxy runs several workers, else a LocalLimiter. Limits keep holding, per machine instead of
    across the cluster (a client spreading requests over N nodes gets up to N times its limit until
    Redis is back), and `shared` says so for /health and /metrics. What was counted locally stays
    local: Redis's logs resume where they were, and a slot taken locally is given back locally.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "fortress:",
        slot_ttl_s: int = 3600,
        down_s: float = 2.0,
        locks_every_s: float = 1.0,
        fallback: Limiter | None = None,
    ) -> None:
        self._prefix = prefix
        self._slot_ttl_s = slot_ttl_s
        self._down_s = down_s
        self._down_until = 0.0
        self._log = client.register_script(_LOG_LUA)
        self._acquire = client.register_script(_ACQUIRE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._auth = client.register_script(_AUTH_LUA)
        self._client = client
        self._locks: dict[str, float] = {}  # address -> locked until, as last read from Redis
        self._locks_every_s = locks_every_s
        self._locks_read = -locks_every_s
        self._local: Limiter = fallback if fallback is not None else LocalLimiter()
        self._local_slots: dict[str, int] = {}  # slots this process took from the fallback
        self.shared = True  # False from a failed call until one succeeds: decisions are local meanwhile
        self.errors = 0

    def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a script; None when Redis failed, then skip Redis for `down_s` (sync calls block the loop)."""
        import redis

        if self._down_until and time.monotonic() < self._down_until:
            self.errors += 1
            return None
        try:
            reply = script(keys=keys, args=args)
        except redis.RedisError:
            self._failed()
            return None
        self._down_until = 0.0
        self.shared = True
        return reply

    def _failed(self) -> None:
        self.errors += 1
        self.shared = False
        self._down_until = time.monotonic() + self._down_s

    def _decision(self, mode: str, bucket: str, limit: int, window_s: int, now: float, cost: int) -> Decision:
        window_s = max(1, window_s)
        key = f"{self._prefix}rl:{{{bucket}}}"  # one hash slot for both keys in a Redis cluster
        reply = self._call(self._log, [key, key + ":log"], [mode, limit, window_s, repr(now), cost, RING])
        if reply is None:  # Redis unreachable: this process decides alone
            local = self._local
            return (
                local.hit(bucket, limit, window_s, now, cost)
                if mode == "hit"
                else local.peek(bucket, limit, window_s, now, cost)
            )
        total = int(reply[1])
        oldest = float(reply[2]) if reply[2] else None
        log = [(float(t), int(a)) for t, a in (e.split() for e in reply[3:])]
        decision = decide(limit, window_s, now, cost, total, oldest, log, mode == "hit")
        if decision.allowed != bool(int(reply[0])):  # cannot happen: the same integer comparison
            raise AssertionError("Redis and Python disagree on a limit decision")
        return decision

    def hit(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._decision("hit", bucket, limit, window_s, now, cost)

    def peek(self, bucket: str, limit: int, window_s: int, now: float, cost: int = 1) -> Decision:
        return self._decision("peek", bucket, limit, window_s, now, cost)

    def add(self, bucket: str, amount: int, window_s: int, now: float) -> None:
        key = f"{self._prefix}rl:{{{bucket}}}"
        args = ["add", 0, max(1, window_s), repr(now), amount, RING]
        if self._call(self._log, [key, key + ":log"], args) is None:
            self._local.add(bucket, amount, window_s, now)

    def acquire_slot(self, bucket: str, max_concurrent: int) -> bool:
        reply = self._call(
            self._acquire, [f"{self._prefix}slot:{bucket}"], [max_concurrent, self._slot_ttl_s]
        )
        if reply is not None:
            return bool(reply)
        if not self._local.acquire_slot(bucket, max_concurrent):
            return False
        self._local_slots[bucket] = self._local_slots.get(bucket, 0) + 1
        return True

    def release_slot(self, bucket: str) -> None:
        held = self._local_slots.get(bucket, 0)
        if held:  # taken while Redis was away: Redis never counted it
            if held == 1:
                del self._local_slots[bucket]
            else:
                self._local_slots[bucket] = held - 1
            self._local.release_slot(bucket)
        else:
            self._call(self._release, [f"{self._prefix}slot:{bucket}"], [])

    def auth_failure(self, ip: str, limit: int, window_s: float, lockout_s: float, now: float) -> float:
        keys = [f"{self._prefix}af:{ip}", f"{self._prefix}locked"]
        reply = self._call(self._auth, keys, [limit, window_s, lockout_s, repr(now), ip])
        if reply is None:
            return self._local.auth_failure(ip, limit, window_s, lockout_s, now)
        until = float(reply)
        if until > now:
            self._locks[ip] = until
        return max(0.0, until - now)

    def auth_locked(self, ip: str, now: float) -> float:
        if now - self._locks_read >= self._locks_every_s:
            self._read_locks(now)
        until = self._locks.get(ip, 0.0)
        return max(until - now, self._local.auth_locked(ip, now), 0.0)

    def _read_locks(self, now: float) -> None:
        """Adopt the cluster's current lockouts (at most 10,000: a flood of addresses stays bounded)."""
        import redis

        self._locks_read = now
        if self._down_until and time.monotonic() < self._down_until:
            return
        try:
            rows = self._client.zrangebyscore(f"{self._prefix}locked", f"({now!r}", "+inf", 0, 10_000, True)
        except redis.RedisError:
            self._failed()
            return
        self.shared = True
        self._locks = {(m.decode() if isinstance(m, bytes) else m): float(score) for m, score in rows}


def open_limiter(redis_url: str = "", shm_path: str = "") -> Limiter:
    """The store for this process: Redis when configured, else the shared table (workers > 1), else local.

    With `shm_path`, the parent must have called `SharedLimiter.create(shm_path)` before starting workers;
    with Redis too, the table is what the workers share while Redis is unreachable.
    """
    shared = None
    if shm_path:
        from fortress.pipeline.shm import SharedLimiter

        shared = SharedLimiter(shm_path)
    if redis_url:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # fail fast: every call blocks the event loop, so no retries and short timeouts
        client = redis.Redis.from_url(
            redis_url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 0)
        )
        return RedisLimiter(client, fallback=shared)
    return shared if shared is not None else LocalLimiter()
