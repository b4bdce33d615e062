"""WCAG 2.x contrast arithmetic and a reader for the theme blocks of admin/static/themes.css (pure)."""

from __future__ import annotations

import re
from pathlib import Path

THEMES_CSS = Path(__file__).resolve().parents[2] / "admin" / "static" / "themes.css"
TEXT, LARGE_OR_UI = 4.5, 3.0  # AA: normal text; large text and user-interface parts

_BLOCK = re.compile(r"([^{}]*)\{([^{}]*)\}")
_THEME = re.compile(r'\[data-theme="([a-z]+)"\]')
_PROP = re.compile(r"--([a-z0-9-]+)\s*:\s*([^;]+);")
_RGB = re.compile(r"rgba?\(\s*([\d.]+)[,\s]+([\d.]+)[,\s]+([\d.]+)(?:\s*[,/]\s*([\d.]+%?))?\s*\)")

RGB = tuple[float, float, float]


def theme_variables(css: str | None = None) -> dict[str, dict[str, str]]:
    """theme name -> its custom properties (name without the leading --), from the palette blocks."""
    text = re.sub(r"/\*.*?\*/", "", THEMES_CSS.read_text() if css is None else css, flags=re.S)
    out: dict[str, dict[str, str]] = {}
    for selector, body in _BLOCK.findall(text):
        names = _THEME.findall(selector)
        props = dict(_PROP.findall(body))
        if len(names) == 1 and props:  # palette blocks name one theme; flourishes come after
            out.setdefault(names[0], {}).update({k: v.strip() for k, v in props.items()})
    return out


def hex_rgb(value: str) -> RGB:
    m = re.fullmatch(r"#([0-9a-fA-F]{6})", value.strip())
    if not m:
        raise ValueError(f"not a #rrggbb colour: {value!r}")
    n = int(m.group(1), 16)
    return (n >> 16 & 255, n >> 8 & 255, n & 255)


def css_rgba(value: str) -> tuple[float, float, float, float]:
    """A computed CSS colour (rgb()/rgba(), as getComputedStyle returns them) -> (r, g, b, alpha)."""
    m = _RGB.search(value)
    if not m:
        raise ValueError(f"not an rgb() colour: {value!r}")
    alpha = m.group(4) or "1"
    a = float(alpha[:-1]) / 100 if alpha.endswith("%") else float(alpha)
    return float(m.group(1)), float(m.group(2)), float(m.group(3)), a


def luminance(rgb: RGB) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: RGB, b: RGB) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def over(top: tuple[float, float, float, float], under: RGB) -> RGB:
    """Composite a translucent colour over an opaque one."""
    r, g, b, a = top
    return (r * a + under[0] * (1 - a), g * a + under[1] * (1 - a), b * a + under[2] * (1 - a))
