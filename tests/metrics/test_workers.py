"""Several real processes on one table: each counts into its own slot, another one reads the sum.

Workers are forked (as `fortress serve` forks its workers) and open the table themselves after the fork;
the test process owns no slot and reads like a scraping worker of another process would.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest

from fortress.metrics import layout as L
from fortress.metrics.recorder import BackendState, Recorder, UsageCounts
from fortress.metrics.table import MetricsTable, TableFull

from .conftest import scrape

CTX = multiprocessing.get_context("fork")
CHAT = (("route", "/api/chat"),)
OK = ("fortress_requests_total", (*CHAT, ("status", "200")))


def _worker(path: str, n: int, version: int, out: Any, release: Any) -> None:
    """Count n relayed requests and their tokens, publish its states, then stay alive until released."""
    table = MetricsTable(path)
    slot = table.claim()
    m = Recorder(table, slot)
    for _ in range(n):
        m.request("/api/chat", 200, 0.02, 0.01, 10, 100)
    m.tokens("llama3.2:3b", n, 2 * n)
    m.refused("tokens")
    m.publish(
        1, [BackendState("local", True, "closed", 1, 3, 1)], UsageCounts(n, 0, 2, 0), version, time.time()
    )
    out.put((slot, os.getpid()))
    release.wait(60)
    # no close(): the process just ends, as a crashed worker would; the kernel drops its lock


def _start(path: str, n: int, version: int = 1, release: Any = None) -> tuple[Any, int]:
    out = CTX.Queue()
    release = release if release is not None else CTX.Event()
    proc = CTX.Process(target=_worker, args=(path, n, version, out, release))
    proc.start()
    slot, _pid = out.get(timeout=30)
    return proc, slot


@pytest.fixture
def reader(table_path: str) -> Any:
    table = MetricsTable(table_path)
    yield table
    table.close()


def test_two_workers_are_summed_by_a_third_process(table_path: str, reader: MetricsTable) -> None:
    release = CTX.Event()
    a, slot_a = _start(table_path, 7, release=release)
    b, slot_b = _start(table_path, 5, release=release)
    try:
        assert slot_a != slot_b
        s = scrape(reader)
        assert s[OK] == 12
        assert s[("fortress_request_duration_seconds_count", CHAT)] == 12
        assert s[("fortress_tokens_total", (("kind", "completion"), ("model", "llama3.2:3b")))] == 24
        assert s[("fortress_limit_refusals_total", (("kind", "tokens"),))] == 2
        assert s[("fortress_workers", ())] == 2
        assert s[("fortress_inflight_requests", ())] == 2  # per-worker gauges are summed
        assert s[("fortress_backend_outstanding_requests", (("backend", "local"),))] == 2
        assert s[("fortress_pool_connections", (("backend", "local"), ("state", "idle")))] == 6
        assert s[("fortress_backend_up", (("backend", "local"),))] == 1  # a global: not summed
        assert s[("fortress_usage_rows_pending", ())] == 4
    finally:
        release.set()
        a.join(30)
        b.join(30)
    s = scrape(reader)  # both gone: their counts stay, their gauges go
    assert s[OK] == 12
    assert s[("fortress_usage_rows_written_total", ())] == 12
    assert s[("fortress_workers", ())] == 0
    assert s[("fortress_inflight_requests", ())] == 0
    assert s[("fortress_usage_rows_pending", ())] == 0
    assert not any(k[0] == "fortress_backend_up" for k in s)


def test_a_restarted_worker_reuses_the_slot_and_totals_never_drop(
    table_path: str, reader: MetricsTable
) -> None:
    first, slot = _start(table_path, 5)
    first.kill()  # a crash: no close, no goodbye
    first.join(30)
    assert scrape(reader)[OK] == 5
    release = CTX.Event()
    second, again = _start(table_path, 3, release=release)
    try:
        assert again == slot  # the dead worker's slot was folded into the retired one and handed out again
        s = scrape(reader)
        assert s[OK] == 8
        assert s[("fortress_tokens_total", (("kind", "prompt"), ("model", "llama3.2:3b")))] == 8
        assert s[("fortress_usage_rows_written_total", ())] == 8
        assert s[("fortress_limit_refusals_total", (("kind", "tokens"),))] == 2
        assert s[("fortress_workers", ())] == 1
        retired = reader.read(0, live=False)
        assert sum(retired.routes["/api/chat"][L.R_CELLS : L.R_DURATION_SUM]) == 5
    finally:
        release.set()
        second.join(30)


def _churn(path: str, rounds: int, done: Any) -> None:
    """Workers that come and go one after another, each folding the previous one's slot as it claims."""
    for _ in range(rounds):
        proc, _slot = _start(path, 3)
        proc.kill()
        proc.join(30)
    done.set()


def test_totals_are_monotonic_while_dead_slots_are_folded(table_path: str, reader: MetricsTable) -> None:
    rounds = 8
    done = CTX.Event()
    churn = CTX.Process(target=_churn, args=(table_path, rounds, done))
    churn.start()
    seen: list[int] = []
    while not done.is_set() or not seen:
        seen.append(int(sum(sum(row[: L.R_DURATION_SUM]) for row in reader.collect().routes.values())))
    churn.join(30)
    seen.append(int(scrape(reader)[OK]))
    assert seen == sorted(seen), "a total went down"
    assert seen[-1] == 3 * rounds


def _flip(path: str, ready: Any, stop: Any) -> None:
    """Publish two different states back to back until told to stop."""
    table = MetricsTable(path)
    m = Recorder(table, table.claim())
    states = (
        (10, [BackendState("a", True, "closed", 1, 1, 1), BackendState("b", True, "closed", 1, 1, 1)], 1),
        (20, [BackendState("c", False, "open", 2, 2, 2)], 2),
    )
    i = 0
    while not stop.is_set():
        inflight, backends, version = states[i % 2]
        m.publish(inflight, backends, UsageCounts(0, 0, 0, 0), version, 0.0)
        ready.set()
        i += 1


def test_a_reader_never_sees_half_a_publish(table_path: str, reader: MetricsTable) -> None:
    ready, stop = CTX.Event(), CTX.Event()
    writer = CTX.Process(target=_flip, args=(table_path, ready, stop))
    writer.start()
    try:
        assert ready.wait(30)
        seen = set()
        for _ in range(2000):
            t = reader.collect()
            state = (t.inflight, t.snapshot_version, tuple(sorted(t.backends)))
            assert state in {(10, 1, ("a", "b")), (20, 2, ("c",))}, state
            seen.add(state[1])
    finally:
        stop.set()
        writer.join(30)
    assert seen  # the loop ran; which states it met depends on scheduling


def test_a_full_table_refuses_a_claim_with_a_clear_error(tmp_path: Any) -> None:
    path = str(tmp_path / "metrics.shm")
    MetricsTable.create(path, workers=1)
    table = MetricsTable(path)
    release = CTX.Event()
    holders = [_start(path, 1, release=release)[0] for _ in range(table.slots - 1)]
    try:
        with pytest.raises(TableFull, match="metrics slots belong to live workers"):
            table.claim()
    finally:
        release.set()
        for proc in holders:
            proc.join(30)
    assert table.claim() >= 1  # once they are gone their slots are free again
    table.close()
