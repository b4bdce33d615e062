"""Server-side SVG charts (pure): stacked columns over time and horizontal bars by category.

Each chart draws its own title, axis titles with units, tick labels of TEXT px at its natural width
(the page never shows a chart narrower than about that: it scrolls instead, so text stays legible),
and a <title> on every bar or segment, so hovering shows the exact value. Styling is CSS classes
only (the CSP forbids inline styles) coloured by the theme; admin.js copies the computed colours into
PNG exports, so a download looks like the page.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, WIDE = 560, 1120  # natural widths (px): half and full width of the analytics page
HEIGHT = 270
TEXT, CHAR = 14, 8.6  # tick font size and a generous average glyph width at that size (monospace too)
TOP, BOTTOM, RIGHT = 58, 48, 12  # room for title and legend, x ticks and axis title, last bar
ROW = 28  # one horizontal bar


@dataclass(frozen=True)
class Series:
    """One stacked layer of a column chart; css picks its colour (s2: second colour, bad: errors)."""

    name: str
    values: Sequence[float]
    css: str = ""


def compact(v: float) -> str:
    """Tick labels: short (1.2k, 3.4M); hover titles use full numbers."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= size:
            return f"{v / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def full(v: float) -> str:
    return f"{v:,.0f}" if v == int(v) else f"{v:,.1f}"


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0 and about `count` round steps (1, 2, 2.5 or 5 times a power of ten) reaching at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if step < 1:
        step = 1.0  # counts: no fractional ticks
    n = math.ceil(top / step - 1e-9)
    return [i * step for i in range(n + 1)]


def fit(ticks: Sequence[str], plot_w: float) -> list[str]:
    """Keep every k-th non-empty tick label, k as small as lets them sit side by side without overlap."""
    shown = [i for i, t in enumerate(ticks) if t]
    if len(shown) < 2:
        return list(ticks)
    widest = max(len(ticks[i]) for i in shown) * CHAR + 12
    gap = min(b - a for a, b in itertools.pairwise(shown)) * plot_w / len(ticks)  # px between neighbours
    keep = set(shown[:: max(1, math.ceil(widest / gap))])
    return [t if i in keep else "" for i, t in enumerate(ticks)]


def columns(
    title: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str,
    axis: str,
    ticks: Sequence[str] = (),
    width: int = WIDTH,
) -> str:
    """Stacked columns, one per label; `ticks` (same length, "" = none) names the x axis, or one label
    in every few is shown; `unit` names the y values ("requests"), `axis` the x axis ("hour (UTC)")."""
    n = len(labels)
    totals = [sum(s.values[i] for s in series) for i in range(n)]
    scale = nice_ticks(max(totals, default=0))
    top = scale[-1]
    left = max(len(compact(v)) for v in scale) * CHAR + 14
    plot_w, plot_h = width - left - RIGHT, HEIGHT - TOP - BOTTOM
    base = TOP + plot_h
    step = plot_w / max(n, 1)
    parts = [_open(title, width, HEIGHT), _title(title)]
    if len(series) > 1:
        parts.append(_legend(series, width))
    parts.append(_text("unit", 4, TOP - 12, unit))
    for v in scale:
        y = base - plot_h * v / top
        parts.append(f'<line class="gridline" x1="{left}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(_text("tick", left - 8, y + 5, compact(v), "end"))
    ticks = fit(ticks or labels, plot_w)
    for i, label in enumerate(labels):
        x = left + i * step
        y = base
        for s in series:
            v = s.values[i]
            if v <= 0:
                continue
            h = plot_h * v / top
            y -= h
            share = f" of {full(totals[i])}" if len(series) > 1 else ""
            hover = f"{label}: {s.name} {full(v)}{share} {unit}"
            parts.append(_bar(s.css, x + step * 0.12, y, max(step * 0.76, 0.6), h, hover))
        if ticks[i]:
            cx = x + step / 2
            half = len(ticks[i]) * CHAR / 2  # a label at either end stays inside the picture
            tx, anchor = (width - 2, "end") if cx + half > width - 2 else (cx, "middle")
            parts.append(f'<line class="axis" x1="{cx:.1f}" x2="{cx:.1f}" y1="{base}" y2="{base + 4}"/>')
            parts.append(_text("tick", tx, base + 20, ticks[i], anchor))
    parts.append(f'<line class="axis" x1="{left}" x2="{width - RIGHT}" y1="{base}" y2="{base}"/>')
    parts.append(_text("unit", left + plot_w / 2, HEIGHT - 6, axis, "middle"))
    if not any(totals):
        parts.append(_empty(left + plot_w / 2, TOP + plot_h / 2))
    parts.append("</svg>")
    return "".join(parts)


def bars(
    title: str, items: Sequence[tuple[str, float]], *, unit: str, css: Sequence[str] = (), width: int = WIDTH
) -> str:
    """Horizontal bars, one row per (label, value) in the order given, each with its value and share."""
    total = sum(v for _, v in items) or 1
    top = max((v for _, v in items), default=0) or 1
    label_w = min(max((len(label) for label, _ in items), default=4), 26) * CHAR + 12
    value_w = 16 * CHAR
    plot_w = width - label_w - value_w
    height = TOP - 16 + max(len(items), 1) * ROW + 8
    parts = [_open(title, width, height), _title(title)]
    parts.append(_text("unit", width - RIGHT, 24, f"{unit}, share", "end"))
    for i, (label, value) in enumerate(items):
        y = TOP - 16 + i * ROW
        w = max(plot_w * value / top, 0.6)
        shown = label if len(label) <= 26 else label[:25] + "…"
        pct = 100 * value / total
        parts += [
            _text("label", label_w - 8, y + 19, shown, "end"),
            _bar(
                css[i] if css else "",
                label_w,
                y + 4,
                w,
                ROW - 8,
                f"{label}: {full(value)} {unit} ({pct:.1f}%)",
            ),
            _text("value", label_w + w + 6, y + 19, f"{compact(value)} · {pct:.0f}%"),
        ]
    if not items:
        parts.append(_empty(width / 2, TOP + 4))
    parts.append("</svg>")
    return "".join(parts)


def _open(title: str, width: int, height: float) -> str:
    t = escape(title)
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}" '
        f'role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>'
        f'<rect class="frame" width="{width}" height="{height:.0f}"/>'
    )


def _text(css: str, x: float, y: float, content: str, anchor: str = "start") -> str:
    return f'<text class="{css}" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(content)}</text>'


def _bar(css: str, x: float, y: float, w: float, h: float, hover: str = "") -> str:
    """A bar; `hover` becomes its <title>, which browsers show as a tooltip."""
    tip = f"<title>{escape(hover)}</title>" if hover else ""
    return f'<rect class="bar {css}" x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}">{tip}</rect>'


def _title(title: str) -> str:
    return _text("title", 4, 24, title)


def _legend(series: Sequence[Series], width: int) -> str:
    parts, x = [], width - RIGHT
    for s in reversed(series):
        x -= len(s.name) * CHAR
        parts.append(_text("legend", x, 24, s.name))
        x -= 18
        parts.append(_bar(s.css, x, 13, 12, 12))
        x -= 14
    return "".join(parts)


def _empty(x: float, y: float) -> str:
    return _text("empty", x, y, "No requests in this range", "middle")
