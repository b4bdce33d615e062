"""Order statistics for benchmark samples: pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """Median of the rounds; NaN values (a failed measurement) are ignored."""
    return percentile([v for v in values if not math.isnan(v)], 50.0)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN when undefined, so a missing figure never looks like a pass."""
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


Rounds = dict[str, dict[str, list[dict[str, float]]]]  # workload -> target -> one dict per round
Summary = dict[str, dict[str, dict[str, float]]]  # workload -> target -> metric -> figure


def summarize(rounds: Rounds) -> Summary:
    """Median of every figure over the rounds; errors are summed, so one bad round shows."""
    out: Summary = {}
    for workload, by_target in rounds.items():
        for target, runs in by_target.items():
            figures: dict[str, float] = {}
            metrics = dict.fromkeys(m for r in runs for m in r)  # union, in first-seen order
            for metric in metrics:
                values = [float(r[metric]) for r in runs if metric in r]
                figures[metric] = sum(values) if metric == "errors" else median(values)
            out.setdefault(workload, {})[target] = figures
    return out
