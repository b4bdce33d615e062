"""The admin's themes: names an account may choose, each a block of CSS custom properties in
static/themes.css. The name is rendered server-side on <html data-theme="...">, so the first paint
already has the right colours (no script swaps them after load). A stored name no theme answers to
(one removed later) falls back to light, which themes.css also gives :root."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Theme:
    name: str  # the data-theme value and the stored admins.theme
    label: str
    note: str


THEMES = (
    Theme("light", "Light", "the default: dark text on white cards"),
    Theme("dark", "Dark", "light text on charcoal, easy on the eyes at night"),
    Theme("contrast", "High contrast", "white and yellow on black, 7:1 and more"),
    Theme("terminal", "CRT terminal", "green phosphor, monospace, scanlines"),
    Theme("amber", "Amber terminal", "amber phosphor on black, monospace"),
    Theme("cyberpunk", "Cyberpunk neon", "pink and cyan neon on deep violet"),
    Theme("brutalist", "Brutalist", "black borders, hard shadows, no curves"),
    Theme("solarized", "Solarized", "the classic warm light palette"),
)
NAMES = frozenset(t.name for t in THEMES)
