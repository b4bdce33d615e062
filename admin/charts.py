"""Server-side SVG charts (pure): column series over time and horizontal bars by category.

Styling uses presentation attributes and CSS classes only, so the strict CSP (no inline styles)
holds; each chart carries a <title> and an aria-label for screen readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T = 640, 220, 48, 28, 10


def _fmt(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}" if v == int(v) else f"{v:.1f}"


def columns(title: str, points: Sequence[tuple[str, float]], *, every: int = 0) -> str:
    """One column per (label, value); `every` labels one x tick in that many (0 = automatic)."""
    n = len(points)
    top = max((v for _, v in points), default=0) or 1
    plot_w, plot_h = WIDTH - PAD_L - 4, HEIGHT - PAD_B - PAD_T
    step = plot_w / max(n, 1)
    every = every or max(1, n // 8)
    parts = [_open(title)]
    for frac in (0, 0.5, 1):
        y = PAD_T + plot_h * (1 - frac)
        parts.append(f'<line class="grid" x1="{PAD_L}" x2="{WIDTH - 4}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(top * frac)}</text>'
        )
    for i, (label, value) in enumerate(points):
        h = plot_h * value / top
        x = PAD_L + i * step
        parts.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{PAD_T + plot_h - h:.1f}" '
            f'width="{max(step * 0.8, 0.5):.1f}" height="{h:.1f}">'
            f"<title>{escape(label)}: {_fmt(value)}</title></rect>"
        )
        if i % every == 0:
            parts.append(
                f'<text class="tick" x="{x + step / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    if not points:
        parts.append(
            f'<text class="empty" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">No data</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bars(title: str, items: Sequence[tuple[str, float]]) -> str:
    """Horizontal bars, one row per (label, value), largest first as given."""
    row = 22
    height = max(len(items), 1) * row + 8
    top = max((v for _, v in items), default=0) or 1
    label_w, plot_w = 170, WIDTH - 170 - 60
    parts = [_open(title, height)]
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = plot_w * value / top
        parts.append(
            f'<text class="tick" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label[:28])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{max(w, 0.5):.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {_fmt(value)}</title></rect>"
            f'<text class="tick" x="{label_w + w + 4:.1f}" y="{y + 15}">{_fmt(value)}</text>'
        )
    if not items:
        parts.append(f'<text class="empty" x="{WIDTH / 2}" y="20" text-anchor="middle">No data</text>')
    parts.append("</svg>")
    return "".join(parts)


def _open(title: str, height: int = HEIGHT) -> str:
    t = escape(title)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-label="{t}" '
        f'xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMinYMin meet"><title>{t}</title>'
    )
