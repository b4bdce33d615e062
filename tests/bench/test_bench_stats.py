"""Order statistics and the per-round summary behind every figure in bench/RESULTS.md."""

import math

from bench.stats import median, percentile, ratio, summarize


def test_percentile_interpolates_between_samples() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 0, 5], 100) == 10
    assert percentile([10, 0, 5], 0) == 0
    assert math.isnan(percentile([], 99))


def test_median_ignores_failed_rounds() -> None:
    assert median([3.0, math.nan, 1.0]) == 2.0


def test_ratio_is_nan_when_undefined() -> None:
    assert ratio(1, 4) == 0.25
    assert math.isnan(ratio(1, 0))
    assert math.isnan(ratio(math.nan, 1))


def test_summary_takes_medians_and_sums_errors() -> None:
    rounds = {"w": {"nginx": [{"rps": 10, "errors": 0}, {"rps": 30, "errors": 2}, {"rps": 20, "errors": 1}]}}
    assert summarize(rounds) == {"w": {"nginx": {"rps": 20, "errors": 3}}}


def test_summary_keeps_figures_missing_from_a_crashed_round() -> None:
    rounds = {"w": {"fortress": [{"errors": 1}, {"rps": 5.0, "errors": 0}]}}
    assert summarize(rounds)["w"]["fortress"] == {"errors": 1, "rps": 5.0}
