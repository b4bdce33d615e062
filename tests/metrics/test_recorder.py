"""One worker's counting, read back through collect, the families and the text parser: exact values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fortress.metrics import layout as L
from fortress.metrics.recorder import BackendState, Recorder, UsageCounts
from fortress.metrics.table import MetricsTable, read_totals

from .conftest import scrape

CHAT = (("route", "/api/chat"),)


def _buckets(samples: dict, name: str, labels: tuple) -> dict[str, float]:
    return {
        dict(k[1])["le"]: v
        for k, v in samples.items()
        if k[0] == f"{name}_bucket" and tuple(p for p in k[1] if p[0] != "le") == labels
    }


def test_requests_durations_ttfb_and_bytes_are_exact(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    m.request("/api/chat", 200, 0.004, 0.002, 100, 2000)
    m.request("/api/chat", 200, 1.5, 0.3, 50, 7000)
    m.request("/api/chat", 502, 0.02, None, 10, 90)
    m.request("/api/tags", 200, 0.001, 0.001, 0, 300)
    s = scrape(table)
    assert s[("fortress_requests_total", (*CHAT, ("status", "200")))] == 2
    assert s[("fortress_requests_total", (*CHAT, ("status", "502")))] == 1
    assert s[("fortress_requests_total", (("route", "/api/tags"), ("status", "200")))] == 1
    duration = _buckets(s, "fortress_request_duration_seconds", CHAT)
    assert (duration["0.005"], duration["0.025"], duration["1.0"], duration["2.5"], duration["+Inf"]) == (
        1,
        2,
        2,
        3,
        3,
    )
    assert s[("fortress_request_duration_seconds_count", CHAT)] == 3
    assert s[("fortress_request_duration_seconds_sum", CHAT)] == pytest.approx(1.524)
    ttfb = _buckets(s, "fortress_request_ttfb_seconds", CHAT)  # the 502 never had a first byte
    assert (ttfb["0.005"], ttfb["0.25"], ttfb["0.5"], ttfb["+Inf"]) == (1, 1, 2, 2)
    assert s[("fortress_request_ttfb_seconds_sum", CHAT)] == pytest.approx(0.302)
    assert s[("fortress_request_bytes_total", CHAT)] == 160
    assert s[("fortress_response_bytes_total", CHAT)] == 9090


def test_bucket_bounds_are_inclusive(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    for seconds in (0.005, 0.0050001, 300.0, 301.0):
        m.request("/api/show", 200, seconds, None, 0, 0)
    buckets = _buckets(scrape(table), "fortress_request_duration_seconds", (("route", "/api/show"),))
    assert (buckets["0.005"], buckets["0.01"], buckets["300.0"], buckets["+Inf"]) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    ("status", "label"),
    [
        (200, "200"),
        (201, "201"),
        (101, "1xx"),
        (302, "3xx"),
        (418, "4xx"),
        (599, "5xx"),
        (0, "other"),
        (999, "other"),
    ],
)
def test_statuses_outside_the_fixed_set_fall_into_their_class(
    owned: tuple[MetricsTable, Recorder], status: int, label: str
) -> None:
    table, m = owned
    m.request("/api/chat", status, 0.01, None, 0, 0)
    m.request("/api/chat", 10_000, 0.01, None, 0, 0)  # not a status at all: still counted, as "other"
    s = scrape(table)
    labels = {dict(k[1])["status"]: v for k, v in s.items() if k[0] == "fortress_requests_total"}
    assert labels == ({label: 2} if label == "other" else {label: 1, "other": 1})


def test_route_names_beyond_the_table_are_counted_as_other(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    for i in range(L.ROUTES + 10):
        m.request(f"/api/r{i}", 200, 0.01, None, 1, 1)
    routes = table.collect().routes
    assert len(routes) == L.ROUTES
    assert sum(routes["other"][L.R_CELLS : L.R_DURATION_SUM]) == 11  # the last row's names and beyond
    assert routes["/api/r0"][L.R_BYTES_IN] == 1


def test_tokens_by_model_capped_with_unknown_and_other(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    m.tokens("llama3.2:3b", 12, 30)
    m.tokens("llama3.2:3b", 8, 10)
    m.tokens(None, 1, 2)
    m.tokens("x" * 200, 5, 5)  # longer than a name slot holds: other, never a truncated name
    for i in range(L.MODELS):
        m.tokens(f"m{i}", 1, 1)
    s = scrape(table)
    assert s[("fortress_tokens_total", (("kind", "prompt"), ("model", "llama3.2:3b")))] == 20
    assert s[("fortress_tokens_total", (("kind", "completion"), ("model", "llama3.2:3b")))] == 40
    assert s[("fortress_tokens_total", (("kind", "completion"), ("model", "unknown")))] == 2
    models = {dict(k[1])["model"] for k in s if k[0] == "fortress_tokens_total"}
    assert len(models) == L.MODELS
    # 255 rows before `other`: 2 taken first, m0..m252 the rest; m253..m255 and the long name are "other"
    assert s[("fortress_tokens_total", (("kind", "prompt"), ("model", "other")))] == 5 + 3


def test_refusals_by_kind(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    m.refused("rate")
    m.refused("rate")
    m.refused("concurrency")
    s = scrape(table)
    got = {dict(k[1])["kind"]: v for k, v in s.items() if k[0] == "fortress_limit_refusals_total"}
    assert got == {"rate": 2, "tokens": 0, "concurrency": 1}


def test_published_states_replace_the_previous_ones(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    loaded = time.time() - 30
    m.publish(
        3,
        [BackendState("gpu-a", True, "closed", 2, 5, 2), BackendState("gpu-b", False, "open", 0, 0, 0)],
        UsageCounts(written=90, dropped=1, pending=4, restarts=0),
        41,
        loaded,
    )
    s = scrape(table)
    a, b = (("backend", "gpu-a"),), (("backend", "gpu-b"),)
    assert s[("fortress_inflight_requests", ())] == 3
    assert (s[("fortress_backend_up", a)], s[("fortress_backend_up", b)]) == (1, 0)
    assert s[("fortress_backend_outstanding_requests", a)] == 2
    assert s[("fortress_backend_breaker_state", (*b, ("state", "open")))] == 1
    assert s[("fortress_backend_breaker_state", (*b, ("state", "closed")))] == 0
    assert s[("fortress_pool_connections", (*a, ("state", "idle")))] == 5
    assert s[("fortress_pool_connections", (*a, ("state", "active")))] == 2
    assert s[("fortress_usage_rows_written_total", ())] == 90
    assert s[("fortress_usage_rows_dropped_total", ())] == 1
    assert s[("fortress_usage_rows_pending", ())] == 4
    assert s[("fortress_snapshot_version", ())] == 41
    assert 30 <= s[("fortress_snapshot_age_seconds", ())] < 3600
    assert s[("fortress_workers", ())] == 1
    assert s[("process_resident_memory_bytes", ())] > 0
    assert s[("process_cpu_seconds_total", ())] > 0

    m.publish(
        0, [BackendState("gpu-b", True, "half_open", 1, 0, 1)], UsageCounts(95, 1, 0, 1), 42, time.time()
    )
    s = scrape(table)
    assert not any(dict(k[1]).get("backend") == "gpu-a" for k in s)  # removed from the config: gone
    assert s[("fortress_backend_breaker_state", (("backend", "gpu-b"), ("state", "half_open")))] == 1
    assert s[("fortress_usage_writer_restarts_total", ())] == 1
    assert s[("fortress_snapshot_version", ())] == 42


def test_a_publish_that_fails_leaves_the_previous_one_whole(owned: tuple[MetricsTable, Recorder]) -> None:
    table, m = owned
    m.publish(1, [BackendState("gpu-a", True, "closed", 0, 1, 0)], UsageCounts(3, 0, 0, 0), 5, time.time())
    with pytest.raises(ValueError):
        m.publish(
            9, [BackendState("gpu-b", True, "melted", 0, 1, 0)], UsageCounts(4, 0, 0, 0), 6, time.time()
        )
    t = table.collect()
    assert (t.inflight, t.snapshot_version, list(t.backends), t.usage_written) == (1, 5, ["gpu-a"], 3)


def test_process_start_time_is_when_the_table_was_created(table_path: str) -> None:
    before = time.time()
    MetricsTable.create(table_path)
    table = MetricsTable(table_path)
    try:
        s = scrape(table)
        assert before - 1 <= s[("process_start_time_seconds", ())] <= time.time() + 1
        assert s[("fortress_workers", ())] == 0
    finally:
        table.close()


def test_create_starts_from_zero_and_a_foreign_file_is_refused(table_path: str, tmp_path: Path) -> None:
    table = MetricsTable(table_path)
    m = Recorder(table, table.claim())
    m.request("/api/chat", 200, 0.01, None, 0, 0)
    m.close()
    table.close()
    MetricsTable.create(table_path)
    fresh = MetricsTable(table_path)
    try:
        assert fresh.collect().routes == {}
    finally:
        fresh.close()
    other = tmp_path / "limits.shm"
    other.write_bytes(b"FRTLIM01" + bytes(8000))
    with pytest.raises(ValueError, match="not a Fortress metrics table"):
        MetricsTable(str(other))


def test_another_process_reads_the_totals_or_none(
    owned: tuple[MetricsTable, Recorder], tmp_path: Path
) -> None:
    """The admin's dashboard reads the table without a slot; no table (or a foreign file) is None."""
    table, m = owned
    m.tokens("llama3.2", 3, 5)
    totals = read_totals(table.path)
    assert totals is not None and totals.models["llama3.2"][: L.MODEL_STRIDE] == [3, 5]
    assert read_totals(str(tmp_path / "missing.shm")) is None
    for content in (b"", b"FRTMET01", b"FRTLIM01" + bytes(8000)):
        (tmp_path / "bad.shm").write_bytes(content)
        assert read_totals(str(tmp_path / "bad.shm")) is None


def test_a_process_claims_one_slot_only(owned: tuple[MetricsTable, Recorder]) -> None:
    table, _ = owned
    with pytest.raises(RuntimeError, match="already owns"):
        table.claim()
