"""Prometheus text exposition (format 0.0.4): families in, bytes out, nothing else.

Each family renders as `# HELP`, `# TYPE`, then its samples; label values are escaped (backslash, double
quote, newline), HELP text too (backslash, newline). A histogram is given per-bucket counts (the last one
above every bound) and renders them cumulative as `_bucket{le="..."}` up to `le="+Inf"`, then `_sum` and
`_count` (which equals the `+Inf` bucket, so the three always agree). Counter names carry `_total`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
Labels = tuple[tuple[str, str], ...]


class Histogram(NamedTuple):
    buckets: Sequence[int]  # per bucket, not cumulative: len(bounds) + 1, the last for +Inf
    sum: float


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    type: str  # "counter" | "gauge" | "histogram"
    help: str
    samples: Sequence[tuple[Labels, float]] | Sequence[tuple[Labels, Histogram]]
    bounds: tuple[float, ...] = ()  # histograms: the finite upper bounds, ascending


def number(value: float) -> str:
    if isinstance(value, int):
        return str(int(value))  # int(): a bool renders as 0/1
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _escape(value: str) -> str:
    return _escape_help(value).replace('"', '\\"')


def _inner(labels: Labels) -> str:
    return ",".join(f'{name}="{_escape(value)}"' for name, value in labels)


def _family(f: Family) -> Iterable[str]:
    yield f"# HELP {f.name} {_escape_help(f.help)}\n"
    yield f"# TYPE {f.name} {f.type}\n"
    edges = [*(number(float(b)) for b in f.bounds), "+Inf"]
    for labels, value in f.samples:
        inner = _inner(labels)  # once per series: a histogram's bucket lines share it
        braces = f"{{{inner}}}" if inner else ""
        if not isinstance(value, Histogram):
            yield f"{f.name}{braces} {number(value)}\n"
            continue
        bucket = f"{f.name}_bucket{{{inner}," if inner else f"{f.name}_bucket{{"
        total = 0
        for edge, count in zip(edges, value.buckets, strict=True):
            total += count
            yield f'{bucket}le="{edge}"}} {total}\n'
        yield f"{f.name}_sum{braces} {number(float(value.sum))}\n"
        yield f"{f.name}_count{braces} {total}\n"


def render(families: Iterable[Family]) -> bytes:
    return "".join(line for f in families for line in _family(f)).encode()
