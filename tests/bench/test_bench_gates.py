"""Acceptance targets and smoke gates: which summaries pass, which fail, and why."""

from bench.gates import (
    AUTO,
    IDLE,
    SLOW,
    SMALL,
    TRANSLATED,
    TRANSLATED_SLOW,
    TRANSLATED_SMALL,
    UPLOAD,
    acceptance,
    smoke_failures,
)


def healthy() -> dict:
    return {
        SMALL: {
            "direct": {"rps": 100.0, "errors": 0},
            "nginx": {"rps": 90.0, "cpu_s_per_10k": 0.1, "p99_ms": 1.0, "errors": 0},
            "fortress": {"rps": 80.0, "cpu_s_per_10k": 0.15, "p99_ms": 1.2, "errors": 0},
        },
        TRANSLATED_SMALL: {"fortress": {"cpu_s_per_10k": 0.18, "errors": 0}},
        AUTO: {"fortress": {"cpu_s_per_10k": 0.16, "errors": 0}},
        SLOW: {
            "direct": {"ttft_p99_ms": 50.0, "gap_p99_ms": 52.0},
            "fortress": {"ttft_p99_ms": 51.0, "gap_p99_ms": 53.0},
        },
        IDLE: {"fortress": {"rss_per_conn_kib": 4.0, "errors": 0}},
        UPLOAD: {"fortress": {"peak_rss_mib": 40.0, "rss_growth_mib": 2.0, "errors": 0}},
        TRANSLATED: {"raw": {"cpu_s_per_100k_chunks": 0.05}, "translated": {"cpu_s_per_100k_chunks": 0.12}},
        TRANSLATED_SLOW: {
            "raw": {"cpu_s_per_100k_chunks": 3.0},
            "translated": {"cpu_s_per_100k_chunks": 4.0},
        },
    }


def test_all_targets_met() -> None:
    assert all(c.met for c in acceptance(healthy()))


def test_missed_targets_are_named_with_the_measured_value() -> None:
    s = healthy()
    s[SMALL]["fortress"]["rps"] = 36.0
    s[SLOW]["fortress"]["ttft_p99_ms"] = 55.0
    s[SLOW]["fortress"]["gap_p99_ms"] = 62.4
    s[IDLE]["fortress"]["rss_per_conn_kib"] = 9.0
    missed = {c.name: round(c.measured, 3) for c in acceptance(s) if not c.met}
    assert missed == {
        "W1 c32 requests/s, Fortress / nginx": 0.4,
        "W3 TTFT p99 added by Fortress (ms)": 5.0,
        "W3 inter-chunk gap p99, Fortress / direct": 1.2,
        "W4 RSS per idle connection (KiB)": 9.0,
    }


def test_issue_14_cpu_targets_are_relative_to_nginx_and_to_w1() -> None:
    s = healthy()
    s[SMALL]["fortress"]["cpu_s_per_10k"] = 0.21  # 2.1x nginx
    s[TRANSLATED_SMALL]["fortress"]["cpu_s_per_10k"] = 0.28  # 1.33x W1's
    s[AUTO]["fortress"]["cpu_s_per_10k"] = 0.27  # 1.29x W1's
    verdicts = {c.name: c.met for c in acceptance(s)}
    assert verdicts["W1 c32 CPU per request, Fortress / nginx"] is False
    assert verdicts["W1t translated model: CPU per request / W1's"] is False
    assert verdicts['W1a model "auto": CPU per request / W1\'s'] is True


def test_workers_2_is_checked_when_it_ran() -> None:
    s = healthy()
    assert "workers=2" not in " ".join(c.name for c in acceptance(s))
    s[SMALL]["fortress-w2"] = {"rps": 82.0, "cpu_s_per_10k": 0.164, "errors": 0}  # 9% more than 1 worker
    check = acceptance(s)[-1]
    assert (check.name, check.met) == ("W1 c32 CPU per request, workers=2 / workers=1", True)
    s[SMALL]["fortress-w2"]["cpu_s_per_10k"] = 0.17
    assert not acceptance(s)[-1].met


def test_smoke_fails_above_three_and_a_half_times_nginx_w1_cpu_per_request() -> None:
    s = healthy()
    s[SMALL]["fortress"]["cpu_s_per_10k"] = 0.29  # 2.9x, the compiled path's figure: a missed target
    assert smoke_failures(s, 64) == []
    s[SMALL]["fortress"]["cpu_s_per_10k"] = 0.4  # 4x: the pure-Python path's figure, or a regression
    assert smoke_failures(s, 64) == ["W1 Fortress CPU per request is 4.00x nginx's (ceiling 3.5)"]
    del s[SMALL]["fortress"]["cpu_s_per_10k"]  # a figure that went missing fails too
    assert [p.split(" is ")[0] for p in smoke_failures(s, 64)] == ["W1 Fortress CPU per request"]


def test_missing_figures_never_pass() -> None:
    assert not any(c.met for c in acceptance({}))


def test_smoke_passes_a_slow_but_sound_fortress() -> None:
    s = healthy()
    s[SMALL]["fortress"]["rps"] = 20.0  # far below the 0.5 target, still no gross regression
    s[SMALL]["fortress"]["cpu_s_per_10k"] = 0.3  # 3x nginx: a missed target, under the CI ceiling
    assert smoke_failures(s, upload_mib=64) == []


def test_smoke_fails_on_any_failed_response() -> None:
    s = healthy()
    s[SMALL]["nginx"]["errors"] = 1
    assert smoke_failures(s, 64) == ["w1_small_c32 nginx: 1 failed responses"]


def test_smoke_fails_on_gross_regressions() -> None:
    s = healthy()
    s[SMALL]["fortress"]["rps"] = 4.0  # 0.044x nginx: under the 0.12x floor
    s[IDLE]["fortress"]["rss_per_conn_kib"] = 80.0
    s[UPLOAD]["fortress"]["rss_growth_mib"] = 64.0
    problems = smoke_failures(s, 64)
    assert [p.split(" ")[0] for p in problems] == ["W1", "W4", "W5"]


def test_translation_is_held_to_3x_the_raw_relay_and_smoke_fails_past_6x() -> None:
    s = healthy()
    s[TRANSLATED]["translated"]["cpu_s_per_100k_chunks"] = 0.2  # 4x: a missed target, no gross regression
    assert {c.name: c.met for c in acceptance(s)}["W2t translated CPU per chunk / raw"] is False
    assert smoke_failures(s, 64) == []
    s[TRANSLATED]["translated"]["cpu_s_per_100k_chunks"] = 0.35
    assert [p.split(" ")[0] for p in smoke_failures(s, 64)] == ["W2t"]


def test_smoke_gates_skip_workloads_fortress_did_not_run() -> None:
    s = {SMALL: {"direct": {"rps": 1.0, "errors": 0}, "nginx": {"rps": 1.0, "errors": 0}}}
    assert smoke_failures(s, 64) == []


def test_metrics_on_vs_off_is_checked_when_both_ran() -> None:
    s = healthy()
    assert "metrics on / off" not in " ".join(c.name for c in acceptance(s))
    s[SMALL]["fortress-nometrics"] = {"rps": 84.0, "cpu_s_per_10k": 0.145, "errors": 0}
    check = acceptance(s)[-1]
    assert check.name == "W1 c32 CPU per request, metrics on / off" and check.met
    assert round(check.measured, 3) == round(0.15 / 0.145, 3)
    s[SMALL]["fortress-nometrics"]["cpu_s_per_10k"] = 0.14  # 7% more with metrics
    assert not acceptance(s)[-1].met


def test_smoke_without_nginx_skips_the_rps_floor() -> None:
    s = {SMALL: {"fortress": {"rps": 80.0, "errors": 0}, "fortress-nometrics": {"rps": 81.0, "errors": 0}}}
    assert smoke_failures(s, upload_mib=64) == []
