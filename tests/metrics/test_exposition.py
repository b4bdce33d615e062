"""The text renderer, read back by prometheus_client's parser: parseable, exact, escaped."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fortress.metrics.exposition import CONTENT_TYPE, Family, Histogram, number, render


def _parse(body: bytes) -> dict[str, dict]:
    """family name -> {(sample name, sorted labels): value}, plus its type and help."""
    out: dict[str, dict] = {}
    for f in text_string_to_metric_families(body.decode()):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in f.samples}
        out[f.name] = {"type": f.type, "help": f.documentation, "samples": samples}
    return out


def test_counter_and_gauge_with_labels_parse_to_the_exact_values() -> None:
    body = render(
        [
            Family(
                "fortress_requests_total",
                "counter",
                "Requests.",
                [
                    ((("route", "/api/chat"), ("status", "200")), 3),
                    ((("route", "/api/tags"), ("status", "4xx")), 1),
                ],
            ),
            Family("fortress_inflight_requests", "gauge", "In flight.", [((), 2)]),
        ]
    )
    parsed = _parse(body)
    requests = parsed["fortress_requests"]  # the parser names a counter family without _total
    assert requests["type"] == "counter"
    assert requests["samples"] == {
        ("fortress_requests_total", (("route", "/api/chat"), ("status", "200"))): 3.0,
        ("fortress_requests_total", (("route", "/api/tags"), ("status", "4xx"))): 1.0,
    }
    assert parsed["fortress_inflight_requests"]["samples"] == {("fortress_inflight_requests", ()): 2.0}
    assert b"# TYPE fortress_requests_total counter\n" in body
    assert body.endswith(b"\n")


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    bounds = (0.1, 1.0, 10.0)
    body = render(
        [
            Family(
                "fortress_request_duration_seconds",
                "histogram",
                "Duration.",
                [((("route", "/api/chat"),), Histogram([2, 0, 3, 1], 17.25))],
                bounds,
            )
        ]
    )
    text = body.decode()
    assert 'fortress_request_duration_seconds_bucket{route="/api/chat",le="0.1"} 2\n' in text
    samples = _parse(body)["fortress_request_duration_seconds"]["samples"]
    route = ("route", "/api/chat")
    buckets = {dict(labels)["le"]: v for (name, labels), v in samples.items() if name.endswith("_bucket")}
    assert buckets == {"0.1": 2.0, "1.0": 2.0, "10.0": 5.0, "+Inf": 6.0}
    assert samples[("fortress_request_duration_seconds_sum", (route,))] == 17.25
    assert samples[("fortress_request_duration_seconds_count", (route,))] == 6.0


def test_label_values_and_help_are_escaped_and_read_back_unchanged() -> None:
    tricky = 'qwen "3"\\latest\nnext'
    body = render(
        [
            Family(
                "fortress_tokens_total",
                "counter",
                "Tokens \\ by model\nand kind.",
                [((("model", tricky),), 5)],
            )
        ]
    )
    assert b'model="qwen \\"3\\"\\\\latest\\nnext"' in body
    assert b"# HELP fortress_tokens_total Tokens \\\\ by model\\nand kind.\n" in body
    parsed = _parse(body)["fortress_tokens"]
    assert parsed["samples"] == {("fortress_tokens_total", (("model", tricky),)): 5.0}
    assert parsed["help"] == "Tokens \\ by model\nand kind."


def test_a_family_without_series_still_parses() -> None:
    body = render(
        [Family("fortress_backend_up", "gauge", "Up.", []), Family("x_total", "counter", "X.", [((), 0)])]
    )
    parsed = _parse(body)
    assert parsed["fortress_backend_up"]["samples"] == {}
    assert parsed["x"]["samples"] == {("x_total", ()): 0.0}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (True, "1"),
        (0.5, "0.5"),
        (1e-07, "1e-07"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_numbers_use_the_format_spelling(value: float, text: str) -> None:
    assert number(value) == text


def test_content_type_names_the_format_version() -> None:
    assert CONTENT_TYPE == b"text/plain; version=0.0.4; charset=utf-8"
