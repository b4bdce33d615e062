"""Freshness (proxy/freshness.py): a parked request is decided only after a check that started after
it was parked; concurrent waiters share one check; checks never overlap; a failing check still
releases its waiters."""

from __future__ import annotations

import asyncio

import pytest

from fortress.proxy.freshness import Freshness


class Checks:
    """A check coroutine that records when it ran and can be held open by a test."""

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.running = 0
        self.overlap = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def __call__(self) -> None:
        self.started += 1
        self.running += 1
        self.overlap |= self.running > 1
        await self.gate.wait()
        self.running -= 1
        self.finished += 1
        if self.fail:
            raise RuntimeError("database is locked")


async def settle(fresh: Freshness) -> asyncio.Task[None]:
    task = asyncio.get_running_loop().create_task(fresh.run())
    await asyncio.sleep(0.01)  # the first (periodic) check
    return task


async def test_waiters_are_released_by_a_later_check_shared_by_all() -> None:
    checks = Checks()
    fresh = Freshness(checks, interval_s=3600, floor_s=0.0)
    task = await settle(fresh)
    seen: list[int] = []
    before = checks.started
    for _ in range(50):
        fresh.after_next_check(lambda: seen.append(checks.started))
    await asyncio.sleep(0.05)
    assert seen == [before + 1] * 50  # one check for fifty waiters, started after they parked
    task.cancel()


async def test_a_waiter_parked_during_a_check_waits_for_the_next() -> None:
    checks = Checks()
    fresh = Freshness(checks, interval_s=3600, floor_s=0.0)
    task = await settle(fresh)
    checks.gate.clear()
    fresh.after_next_check(lambda: None)
    await asyncio.sleep(0.01)  # that check is now running, held open
    assert checks.running == 1
    late: list[int] = []
    fresh.after_next_check(lambda: late.append(checks.finished))
    checks.gate.set()
    await asyncio.sleep(0.05)
    assert late and late[0] == checks.finished and checks.started >= 3
    assert not checks.overlap
    task.cancel()


async def test_floor_spaces_on_demand_checks() -> None:
    checks = Checks()
    fresh = Freshness(checks, interval_s=3600, floor_s=3600)
    task = await settle(fresh)
    started = checks.started
    released: list[bool] = []
    for _ in range(100):  # a flood of bad keys
        fresh.after_next_check(lambda: released.append(True))
    await asyncio.sleep(0.1)
    assert checks.started == started and not released  # no check before the floor has passed
    task.cancel()


async def test_a_failing_check_still_releases_its_waiters() -> None:
    checks = Checks()
    checks.fail = True
    fresh = Freshness(checks, interval_s=3600, floor_s=0.0)
    task = await settle(fresh)
    released = asyncio.Event()
    fresh.after_next_check(released.set)
    await asyncio.wait_for(released.wait(), 5)
    assert not task.done()  # the loop survives
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_check_with_requests_waiting_is_the_on_demand_one() -> None:
    periodic, demand = Checks(), Checks()
    fresh = Freshness(periodic, interval_s=0.02, floor_s=0.0, on_demand=demand)
    task = await settle(fresh)
    await asyncio.sleep(0.1)
    assert periodic.started >= 2 and demand.started == 0  # nobody waiting: the cheap check
    seen: list[int] = []
    fresh.after_next_check(lambda: seen.append(demand.finished))
    await asyncio.sleep(0.05)
    assert seen == [1]  # decided after the on-demand check (a cluster node asks the control node)
    task.cancel()
