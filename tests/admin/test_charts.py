"""Analytics charts: the SVG builder (pure), and in Chromium legible text at 100% zoom and a PNG
download of every chart that is a real picture of it, in the theme it was shown in."""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from admin import charts
from admin.controllers.analytics import timeline
from tests.admin.conftest import Deployment, csrf, new_page, sign_in
from tests.admin.pngread import SIGNATURE, paeth, read_png
from tests.admin.wcag import hex_rgb, theme_variables

CHARTS = ("hourly", "daily", "tokens", "models", "backends", "status")
TITLE = re.compile(r'<text class="title"[^>]*>([^<]+)</text>')
BAR_TITLE = re.compile(r'<rect class="bar[^"]*"[^>]*><title>([^<]+)</title></rect>')


def test_every_bar_says_its_value_and_text_is_escaped() -> None:
    svg = charts.bars("Models <top>", [("<script>", 1234), ("b", 5)], unit="requests")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'aria-label="Models &lt;top&gt;"' in svg and "style=" not in svg
    assert TITLE.findall(svg) == ["Models &lt;top&gt;"]  # drawn, so the PNG has it too
    assert BAR_TITLE.findall(svg) == ["&lt;script&gt;: 1,234 requests (99.6%)", "b: 5 requests (0.4%)"]
    assert ">requests, share</text>" in svg


def test_stacked_columns_scale_to_round_ticks_and_say_the_total() -> None:
    svg = charts.columns(
        "Per day",
        ["Mon", "Tue", "Wed"],
        [charts.Series("ok", [30, 0, 70]), charts.Series("errors", [10, 0, 0], "bad")],
        unit="requests",
        axis="day (UTC)",
    )
    assert BAR_TITLE.findall(svg) == [
        "Mon: ok 30 of 40 requests",
        "Mon: errors 10 of 40 requests",
        "Wed: ok 70 of 70 requests",
    ]  # no empty segment for Tuesday's zeros
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', svg)
    assert ticks[:4] == ["0", "20", "40", "60"] and "80" in ticks and {"Mon", "Tue", "Wed"} <= set(ticks)
    assert ">requests</text>" in svg and ">day (UTC)</text>" in svg and ">errors</text>" in svg  # legend
    heights = [
        float(h)
        for h in re.findall(
            r'<rect class="bar[^"]*" x="[^"]+" y="[^"]+" width="[^"]+" height="([^"]+)"><title>', svg
        )
    ]
    assert heights[0] / heights[2] == pytest.approx(30 / 70, rel=1e-3)
    assert "No requests in this range" in charts.columns("empty", [], [], unit="requests", axis="day")


def test_nice_ticks_are_round_and_cover_the_top() -> None:
    assert charts.nice_ticks(0) == [0.0, 1.0]
    assert charts.nice_ticks(3) == [0, 1, 2, 3]
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(1234) == [0, 500, 1000, 1500]
    assert charts.nice_ticks(210) == [0, 100, 200, 300]
    for top in (1, 9, 11, 99, 101, 2048, 1e6 + 1):
        scale = charts.nice_ticks(top)
        assert scale[-1] >= top and 2 <= len(scale) <= 6


def test_tick_labels_are_thinned_until_they_do_not_overlap() -> None:
    days = [f"11-{d:02d}" for d in range(1, 31)]
    kept = charts.fit(days, 500)
    positions = [i * 500 / 30 for i, t in enumerate(kept) if t]
    width = len(days[0]) * charts.CHAR
    assert len(positions) < 30 and all(b - a >= width for a, b in itertools.pairwise(positions))
    assert kept[0] == "11-01"
    week = ["Mon 17" if h % 24 == 0 else "" for h in range(168)]
    assert charts.fit(week, 1000) == week  # seven day names fit side by side


def test_timeline_fills_gaps_and_merges_long_ranges() -> None:
    points = {10: (1, 0), 12: (2, 1)}
    assert timeline(points, 10, 13, 2) == (1, [(10, [1, 0]), (11, [0, 0]), (12, [2, 1]), (13, [0, 0])])
    assert timeline(points, 10, 13, 2, max_columns=2) == (2, [(10, [1, 0]), (12, [2, 1])])
    size, buckets = timeline({}, 0, 3659 * 24, 2)
    assert len(buckets) <= 400 and size == 220


def _encode(rows: list[bytes], filters: list[int]) -> bytes:
    """A PNG (RGB) whose rows use the given filter types, filtered the textbook way."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw, prev = b"", bytes(len(rows[0]))
    for row, kind in zip(rows, filters, strict=True):
        out = bytearray()
        for i, x in enumerate(row):
            a, b, c = row[i - 3] if i >= 3 else 0, prev[i], prev[i - 3] if i >= 3 else 0
            out.append((x - (0, a, b, (a + b) // 2, paeth(a, b, c))[kind]) & 255)
        raw += bytes([kind]) + out
        prev = row
    header = struct.pack(">IIBBBBB", len(rows[0]) // 3, len(rows), 8, 2, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_the_png_reader_undoes_every_filter() -> None:
    rows = [bytes((x * 37 + y * 91 + c * 13) % 256 for x in range(4) for c in range(3)) for y in range(5)]
    png = read_png(_encode(rows, [0, 1, 2, 3, 4]))
    assert (png.width, png.height, png.rows) == (4, 5, rows)
    with pytest.raises(ValueError, match="signature"):
        read_png(b"GIF89a" + bytes(20))


# ---- in Chromium ---------------------------------------------------------------------------------


def _account(deployment: Deployment, name: str, theme: str) -> tuple[str, str]:
    """An admin account of its own with `theme` chosen (over HTTP, as the settings form does)."""
    password = "chart-viewer-password"
    c, token = deployment.admin.login()
    data = {"username": name, "new_password": password, "role": "viewer", "_csrf_token": token}
    assert c.post("/settings/admins", data=data).status_code == 303
    own = httpx.Client(base_url=deployment.admin.url)
    token = csrf(own.get("/login"))
    own.post("/login", data={"username": name, "password": password, "_csrf_token": token})
    assert own.post("/settings/theme", data={"theme": theme, "_csrf_token": token}).status_code == 303
    return name, password


@pytest.fixture(scope="module", params=["light", "terminal"])
def analytics(request: pytest.FixtureRequest, browser: Browser, deployment: Deployment) -> Iterator[Page]:
    user, password = _account(deployment, f"charts-{request.param}", request.param)
    page = new_page(browser, deployment.admin.url)
    sign_in(page, user, password)
    page.goto("/analytics")
    yield page
    page.context.close()


@pytest.mark.browser
def test_chart_text_is_legible_at_100_percent(analytics: Page) -> None:
    sizes = analytics.evaluate(
        """[...document.querySelectorAll('svg.chart text')].map(t =>
             [t.getAttribute('class'), t.getScreenCTM().a * parseFloat(getComputedStyle(t).fontSize)])"""
    )
    assert {cls for cls, _ in sizes} >= {"title", "tick", "unit"}
    small = [(cls, px) for cls, px in sizes if px < 12]
    assert not small, f"text under 12 px: {small[:5]}"
    for name in CHARTS:
        figure = analytics.locator(f"#chart-{name}")
        expect(figure.locator("text.title")).to_have_count(1)
        hovers = figure.locator("rect.bar > title").all_text_contents()
        assert hovers and all(re.search(r"\d", h) for h in hovers), name


@pytest.mark.browser
def test_every_chart_downloads_as_a_png_of_itself(analytics: Page) -> None:
    theme = analytics.evaluate("document.documentElement.dataset.theme")
    palette = {k: hex_rgb(v) for k, v in theme_variables()[theme].items() if v.startswith("#")}
    refused: list[str] = []  # the export must live within the CSP (no inline script or style)
    analytics.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    for name in CHARTS:
        box = analytics.locator(f"#chart-{name} svg.chart").bounding_box()
        assert box
        with analytics.expect_download() as info:
            analytics.get_by_role("button", name=f"Download PNG ({name})").click()
        download = info.value
        assert download.suggested_filename.startswith(f"fortress-{name}-")
        assert download.suggested_filename.endswith(".png")
        png = read_png(download.path().read_bytes())
        assert (png.width, png.height) == (round(box["width"] * 2), round(box["height"] * 2)), name
        colours = png.colours()
        assert colours.most_common(1)[0][0] == palette["card"], name  # the theme's card behind the chart
        assert palette["chart-1"] in colours or palette["chart-bad"] in colours, name  # bars are drawn
        assert len(colours) > 20, name  # antialiased text, not a blank picture
    assert not refused, refused
