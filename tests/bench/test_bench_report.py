"""The Markdown section appended to bench/RESULTS.md and the JSON written beside it."""

import json
import math

from bench.gates import acceptance
from bench.report import jsonable, markdown

META = {
    "date": "2026-01-01 00:00 UTC",
    "mode": "full",
    "machine": {"cpu": "X", "cores": 2, "memory_gib": 1.0, "kernel": "6", "python": "3.11", "nginx": "1.22"},
    "commit": "abc1234",
    "command": ".venv/bin/python -m bench.run",
    "pinning": "proxy on CPU 1",
    "rounds": 3,
    "load_average": "0.1 at start, 0.2 at end",
}


def test_markdown_has_the_command_a_table_row_per_figure_and_the_ratio() -> None:
    summary = {"w1_small_c32": {"direct": {"rps": 300.0}, "nginx": {"rps": 200.0}, "fortress": {"rps": 80.0}}}
    text = markdown(META, summary, acceptance(summary))
    assert "- Command: `.venv/bin/python -m bench.run`" in text
    assert "| rps | 300 | 200 | 80 | 0.4 |" in text
    assert "| W1 c32 requests/s, Fortress / nginx | 0.4 | >= 0.5 | MISSED |" in text


def test_json_has_no_nan() -> None:
    doc = jsonable({"a": [math.nan, 1.0], "b": {"c": math.nan}})
    assert json.loads(json.dumps(doc, allow_nan=False)) == {"a": [None, 1.0], "b": {"c": None}}


def test_the_translate_tables_compare_translated_with_raw() -> None:
    summary = {
        "w2t_fast_stream": {
            "raw": {"cpu_s_per_100k_chunks": 0.05},
            "translated": {"cpu_s_per_100k_chunks": 0.1},
        }
    }
    text = markdown(META, summary, acceptance(summary))
    assert "| figure | raw | translated | translated / raw |" in text
    assert "| cpu_s_per_100k_chunks | 0.05 | 0.1 | 2 |" in text
    assert "| W2t translated CPU per chunk / raw | 2 | <= 3 | met |" in text


def test_metrics_on_off_column_when_fortress_ran_both_ways() -> None:
    summary = {"w1_small_c32": {"fortress": {"rps": 100.0}, "fortress-nometrics": {"rps": 104.0}}}
    text = markdown(META, summary, acceptance(summary))
    assert "| figure | fortress | fortress-nometrics | metrics on / off |" in text
    assert "| rps | 100 | 104 | 0.962 |" in text
    assert "targets in alternation (fortress fortress-nometrics per workload" in text


def test_targets_that_did_not_run_say_so() -> None:
    summary = {
        "w1_small_c32": {"fortress": {"cpu_s_per_10k": 1.0}, "fortress-nometrics": {"cpu_s_per_10k": 0.98}}
    }
    text = markdown(META, summary, acceptance(summary))
    assert "| W1 c32 CPU per request, metrics on / off | 1.02 | < 1.05 | met |" in text
    assert "| W5 256 MiB upload peak RSS, process tree (MiB) | n/a | < 64 | not run |" in text
    assert "MISSED" not in text


def test_w1_variants_are_compared_with_fortresss_own_w1() -> None:
    summary = {
        "w1_small_c32": {"nginx": {"cpu_s_per_10k": 0.1}, "fortress": {"cpu_s_per_10k": 0.2}},
        "w1t_small_c32": {"fortress": {"cpu_s_per_10k": 0.25}},
    }
    text = markdown(META, summary, acceptance(summary))
    assert "#### W1t small chat through Fortress, translated" in text
    assert "| figure | fortress | fortress / W1's |\n|---|---|---|\n| cpu_s_per_10k | 0.25 | 1.25 |" in text
    assert "| W1t translated model: CPU per request / W1's | 1.25 | <= 1.3 | met |" in text


def test_workers_2_column_when_it_ran() -> None:
    summary = {"w1_small_c32": {"fortress": {"cpu_s_per_10k": 0.2}, "fortress-w2": {"cpu_s_per_10k": 0.21}}}
    text = markdown(META, summary, acceptance(summary))
    assert "| figure | fortress | fortress-w2 | workers=2 / 1 |" in text
    assert "| W1 c32 CPU per request, workers=2 / workers=1 | 1.05 | <= 1.1 | met |" in text
