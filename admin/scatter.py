"""Server-side SVG scatter plot for the embedding playground (pure): labelled points coloured by set.

Like admin/charts.py it uses classes only (the CSP forbids inline styles): colours come from
playground.css (`.series-0` ... `.series-7`). Every point has a <title> (text and set) for hover and
screen readers; a legend names the sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD, LEGEND_ROW = 640, 480, 28, 20
COLOURS = 8


def _span(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values, default=0.0), max(values, default=0.0)
    if high - low < 1e-12:
        return low - 1.0, high + 1.0
    return low, high


def scatter(
    title: str,
    points: Sequence[tuple[float, float]],
    labels: Sequence[str],
    groups: Sequence[int],
    sets: Sequence[str],
) -> str:
    """One circle and label per point; groups[i] indexes `sets` (the legend, in that order)."""
    legend_h = LEGEND_ROW * ((len(sets) + 3) // 4) + 6
    height = HEIGHT + legend_h
    x0, x1 = _span([p[0] for p in points])
    y0, y1 = _span([p[1] for p in points])
    plot_w, plot_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD
    t = escape(title)
    parts = [
        f'<svg class="chart scatter" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMinYMin meet"><title>{t}</title>',
        f'<rect class="frame" x="{PAD}" y="{legend_h + PAD}" width="{plot_w}" height="{plot_h}"/>',
    ]
    for i, name in enumerate(sets):
        x, y = 8 + (i % 4) * (WIDTH // 4), 6 + (i // 4) * LEGEND_ROW
        parts.append(
            f'<g class="legend"><circle class="series-{i % COLOURS}" cx="{x + 6}" cy="{y + 7}" r="6"/>'
            f'<text x="{x + 16}" y="{y + 12}">{escape(name)}</text></g>'
        )
    for (px, py), label, group in zip(points, labels, groups, strict=True):
        x = PAD + (px - x0) / (x1 - x0) * plot_w
        y = legend_h + PAD + (1 - (py - y0) / (y1 - y0)) * plot_h  # SVG's y grows downwards
        name = escape(label)
        anchor = "end" if x > WIDTH - 120 else "start"
        dx = -7 if anchor == "end" else 7
        parts.append(
            f'<g class="point"><circle class="series-{group % COLOURS}" cx="{x:.1f}" cy="{y:.1f}" r="5">'
            f"<title>{name} ({escape(sets[group])})</title></circle>"
            f'<text x="{x + dx:.1f}" y="{y + 4:.1f}" text-anchor="{anchor}">{name}</text></g>'
        )
    if not points:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{legend_h + HEIGHT / 2}" '
            'text-anchor="middle">No texts</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
