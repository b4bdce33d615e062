"""Keeps a worker's snapshot current: a check every `interval_s`, and one on demand before a refusal.

A check is one indexed read of the database's config_version, and a reload when it moved (the
`check` coroutine server.py passes in). A request that would be refused for something a newer
snapshot may know (a key id it has not seen, a disabled key, a keyless request from an address that
may just have been trusted) is parked with `after_next_check(callback)` and decided again once a
check that *started after it was parked* has finished: a key printed by `fortress key create` works
on the very next request. Checks never overlap: requests parked while one runs ride on the next,
which starts at least `floor_s` after the previous one started, so a flood of bad keys costs one
cheap query per `floor_s` whatever its size, and each bad key waits at most about that long for its
401. Disable and revoke still reach every worker within `interval_s` through the periodic check.

On a cluster node a check is one GET of the version published in Redis, and a check with requests
parked (`on_demand`) first asks the control node to publish what its database holds, so the promise
above holds there too (fortress.cluster.node).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("fortress.proxy")


class Freshness:
    def __init__(
        self,
        check: Callable[[], Awaitable[None]],
        interval_s: float,
        floor_s: float,
        clock: Callable[[], float] | None = None,
        on_demand: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._check = check
        self._on_demand = on_demand or check  # a check with requests waiting (a cluster node asks more)
        self.interval_s = interval_s
        self.floor_s = floor_s
        self._clock = clock
        self._waiting: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._last = float("-inf")  # when the last check started
        self.checks = 0

    def after_next_check(self, callback: Callable[[], None]) -> None:
        """Call `callback` once a check that starts from now on has finished (whatever its outcome)."""
        self._waiting.append(callback)
        self._wake.set()

    async def run(self) -> None:
        """The checking loop; runs until cancelled."""
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            await self._due(clock)
            waiting, self._waiting = self._waiting, []
            self._last = clock()
            self.checks += 1
            try:
                await (self._on_demand if waiting else self._check)()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed check must never stop the proxy; waiters decide on what is
                log.warning("config reload failed: %s", exc)
            for callback in waiting:
                try:
                    callback()
                except Exception:
                    log.exception("a request parked for a configuration check failed")

    async def _due(self, clock: Callable[[], float]) -> None:
        """Until the next check is due: `interval_s` after the last, or `floor_s` when someone waits."""
        while True:
            pause = self._last + (self.floor_s if self._waiting else self.interval_s) - clock()
            if pause <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
