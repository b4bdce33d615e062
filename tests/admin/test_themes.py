"""Themes: every palette meets WCAG AA on paper (its CSS variables) and on real pages in Chromium
(computed colours of the elements drawn), is chosen per account, is rendered by the server on <html>
(so no flash of another theme) and stays across reloads and sign-ins."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from admin.themes import THEMES
from tests.admin.conftest import ADMIN_PASSWORD, ADMIN_USER, Admin, Deployment, csrf, new_page, shot, sign_in
from tests.admin.wcag import (
    LARGE_OR_UI,
    TEXT,
    THEMES_CSS,
    contrast,
    css_rgba,
    hex_rgb,
    over,
    theme_variables,
)

ADMIN_CSS = THEMES_CSS.with_name("admin.css")
# Colours the stylesheet draws on top of each other: (foreground, background) custom properties.
TEXT_PAIRS = (
    ("fg", "bg"), ("fg", "card"), ("muted", "bg"), ("muted", "card"), ("muted", "field"),  # body, .sub, ticks
    ("heading", "bg"), ("heading", "card"), ("accent", "bg"), ("accent", "card"),  # headings, links
    ("on-accent", "accent"), ("top-fg", "top-bg"), ("field-fg", "field"),  # buttons, top bar, inputs
    ("ok", "bg"), ("ok", "card"), ("bad", "bg"), ("bad", "card"), ("warn", "bg"), ("warn", "card"),
    ("bad", "error-bg"), ("ok", "notice-bg"), ("fg", "code-bg"), ("muted", "code-bg"), ("fg", "tag-bg"),
)  # fmt: skip
UI_PAIRS = (  # borders of inputs and chart marks: 3:1 against what surrounds them
    ("field-line", "field"), ("field-line", "card"), ("chart-1", "card"), ("chart-2", "card"),
    ("chart-bad", "card"), ("accent", "bg"),
)  # fmt: skip
PAGES = ("/", "/users/ana", "/backends", "/settings", "/analytics", "/help")
README = {"dark": "/analytics", "terminal": "/", "cyberpunk": "/analytics", "brutalist": "/users"}


def test_every_theme_has_a_complete_palette() -> None:
    palettes = theme_variables()
    assert set(palettes) == {t.name for t in THEMES}
    for name, props in palettes.items():
        assert props.keys() == palettes["light"].keys(), name
        for var, value in props.items():
            if var not in ("font", "font-mono", "radius", "edge", "shadow", "glow", "heading-case", "scheme"):
                hex_rgb(value)  # raises unless #rrggbb


@pytest.mark.parametrize("theme", [t.name for t in THEMES])
def test_every_palette_meets_wcag_aa(theme: str) -> None:
    p = {k: v for k, v in theme_variables()[theme].items() if v.startswith("#")}
    for pairs, needed in ((TEXT_PAIRS, TEXT), (UI_PAIRS, LARGE_OR_UI)):
        for fg, bg in pairs:
            ratio = contrast(hex_rgb(p[fg]), hex_rgb(p[bg]))
            assert ratio >= needed, f"{theme}: --{fg} on --{bg} is {ratio:.2f}:1, needs {needed}:1"


def test_pages_draw_only_theme_colours() -> None:
    """admin.css names no colour of its own: everything comes from the theme's properties."""
    css = re.sub(r"/\*.*?\*/", "", ADMIN_CSS.read_text(), flags=re.S)
    assert not re.findall(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|\b(?:white|black)\b", css)


def _signed_in(admin: Admin, user: str, password: str) -> tuple[httpx.Client, str]:
    c = admin.client()
    token = csrf(c.get("/login"))
    assert (
        c.post("/login", data={"username": user, "password": password, "_csrf_token": token}).status_code
        == 303
    )
    return c, token


def _html_theme(c: httpx.Client, path: str = "/users") -> str:
    m = re.search(r'<html lang="en" data-theme="([a-z]+)">', c.get(path).text)
    assert m
    return m.group(1)


def test_the_server_renders_each_accounts_theme_and_refuses_unknown_ones(admin: Admin) -> None:
    c, token = admin.login()
    assert (
        c.post(
            "/settings/admins",
            data={
                "username": "night",
                "new_password": "night-owl-pass",
                "role": "viewer",
                "_csrf_token": token,
            },
        ).status_code
        == 303
    )
    night, night_token = _signed_in(admin, "night", "night-owl-pass")
    assert _html_theme(night) == "light"
    r = night.post("/settings/theme", data={"theme": "dark", "_csrf_token": night_token})
    assert (r.status_code, r.headers["location"]) == (303, "/settings#theme")  # a viewer may pick its own
    assert _html_theme(night) == _html_theme(night, "/analytics") == "dark"
    assert _html_theme(_signed_in(admin, "night", "night-owl-pass")[0]) == "dark"  # a new sign-in keeps it
    assert _html_theme(c) == "light"  # other accounts keep theirs
    assert night.post("/users", data={"name": "sneaky", "_csrf_token": night_token}).status_code == 403

    bad = night.post("/settings/theme", data={"theme": "comic-sans", "_csrf_token": night_token})
    assert bad.status_code == 400 and "There is no theme named &#39;comic-sans&#39;" in bad.text
    assert night.post("/settings/theme", data={"theme": "light"}).status_code == 403  # CSRF
    assert _html_theme(night) == "dark"
    assert 'data-theme="light"' in admin.client().get("/login").text  # signed out: the default


# ---- in Chromium ---------------------------------------------------------------------------------

COLLECT = """() => {
  const rgba = (e, prop) => getComputedStyle(e).getPropertyValue(prop);
  const backgrounds = (e) => {  // from the element up to the first opaque background
    const out = [];
    for (let x = e; x; x = x.parentElement) {
      const c = rgba(x, 'background-color');
      if (!/rgba\\(.*,\\s*0\\)$/.test(c)) out.push(c);
      if (/^rgb\\(/.test(c)) return out;
    }
    out.push(rgba(document.documentElement, 'background-color'));
    return out;
  };
  const found = [];
  for (const e of document.querySelectorAll('body *')) {
    if (['SCRIPT', 'STYLE', 'OPTION', 'title'].includes(e.tagName)) continue;
    const text = [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('').trim();
    const r = e.getBoundingClientRect();
    const shown = r.width >= 2 && r.height >= 2 && r.right > 0 && getComputedStyle(e).visibility == 'visible';
    if (!text || !shown) continue;
    const svg = e.closest('svg');
    const s = getComputedStyle(e);
    found.push({
      text: text.slice(0, 40), tag: e.tagName,
      colour: svg ? s.fill : s.color,
      backgrounds: svg ? [rgba(svg.querySelector('.frame'), 'fill')] : backgrounds(e),
      px: parseFloat(s.fontSize) * (svg ? e.getScreenCTM().a : 1), bold: Number(s.fontWeight) >= 700,
    });
  }
  return found;
}"""


def _poor_contrast(page: Page) -> list[str]:
    """Every text element on the page whose colour misses AA against what is drawn behind it."""
    poor = []
    items = page.evaluate(COLLECT)
    assert len(items) >= 5, f"{page.url}: too little text found to judge"
    for item in items:
        layers = [css_rgba(c) for c in item["backgrounds"]]
        behind = layers[-1][:3]
        for layer in reversed(layers[:-1]):
            behind = over(layer, behind)
        ratio = contrast(over(css_rgba(item["colour"]), behind), behind)
        large = item["px"] >= 24 or (item["px"] >= 18.66 and item["bold"])
        if ratio < (LARGE_OR_UI if large else TEXT):
            poor.append(f"{item['tag']} {item['text']!r}: {ratio:.2f}:1")
    return poor


def _first_background(page: Page) -> str:
    """The body's background as computed when the document was first styled (before any script ran)."""
    return page.evaluate("window.__firstBackground")


@pytest.mark.browser
def test_each_theme_applies_persists_and_reads_well_in_chromium(
    browser: Browser, deployment: Deployment
) -> None:
    c, token = deployment.admin.login()
    data = {"username": "themer", "new_password": "themes-are-fun", "role": "admin", "_csrf_token": token}
    assert c.post("/settings/admins", data=data).status_code == 303
    page = new_page(browser, deployment.admin.url)
    page.add_init_script(
        "document.addEventListener('DOMContentLoaded', () => "
        "{ window.__firstBackground = getComputedStyle(document.body).backgroundColor; });"
    )
    sign_in(page, "themer", "themes-are-fun")
    palettes = theme_variables()
    seen: dict[tuple[str, ...], str] = {}
    for theme in THEMES:
        page.goto("/settings")
        page.locator(f'label[for="theme-{theme.name}"]').click()
        page.get_by_role("button", name="Apply theme").click()
        expect(page.locator("html")).to_have_attribute("data-theme", theme.name)
        p = {
            k: "rgb({}, {}, {})".format(*hex_rgb(v))
            for k, v in palettes[theme.name].items()
            if v.startswith("#")
        }
        page.goto("/users")
        page.reload()  # the choice is stored, not held by this page
        computed = page.evaluate(
            """() => [getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color,
                      getComputedStyle(document.querySelector('main td a')).color,
                      getComputedStyle(document.querySelector('main button')).backgroundColor,
                      getComputedStyle(document.querySelector('header.top')).backgroundColor]"""
        )
        assert computed == [p["bg"], p["fg"], p["accent"], p["accent"], p["top-bg"]], theme.name
        assert _first_background(page) == p["bg"], f"{theme.name}: another background came first"
        seen[tuple(computed)] = theme.name
        for path in PAGES:
            page.goto(path)
            assert _first_background(page) == p["bg"]
            poor = _poor_contrast(page)
            assert not poor, f"{theme.name} {path}: {poor[:6]}"
        page.goto("/users")
        page.get_by_label("New user name").fill("ana")
        page.get_by_role("button", name="Add user").click()
        expect(page.get_by_role("alert")).to_contain_text("already exists")
        assert not _poor_contrast(page), theme.name  # the error flash too
        if theme.name in README:
            page.goto(README[theme.name])
            shot(page, f"theme-{theme.name}", full_page=False)
    assert len(seen) == len(THEMES)  # each theme changed the computed colours
    page.evaluate(
        "document.querySelector('main h1').style.color = getComputedStyle(document.body).backgroundColor"
    )
    assert any("H1" in p for p in _poor_contrast(page))  # the check does see unreadable text

    page.goto("/settings")  # the last choice stays with the account across sign-ins
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")  # the sign-in page: default
    sign_in(page, "themer", "themes-are-fun")
    expect(page.locator("html")).to_have_attribute("data-theme", THEMES[-1].name)
    page.context.close()


@pytest.mark.browser
def test_the_sign_in_page_reads_well(browser: Browser, deployment: Deployment) -> None:
    page = new_page(browser, deployment.admin.url)
    page.goto("/login")
    page.get_by_label("User name").fill(ADMIN_USER)
    page.get_by_label("Password").fill(ADMIN_PASSWORD + "-wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_be_visible()
    assert not _poor_contrast(page)
    page.context.close()
