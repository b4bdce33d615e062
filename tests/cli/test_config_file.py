"""The commented config.toml at the repo root: it parses, and its values are config.py's defaults."""

from __future__ import annotations

import tomllib
from dataclasses import fields

from fortress import config

from .conftest import REPO


def test_repo_config_is_valid_and_matches_the_defaults() -> None:
    cfg = config.load(str(REPO / "config.toml"))
    defaults = config.Config()
    for section in config._SECTIONS.keys() - {"database"}:  # the database path is the repo's own
        assert getattr(cfg, section) == getattr(defaults, section), section
    assert cfg.database.path == str(REPO / "data" / "fortress.db")
    assert cfg.backends == (config.BackendConfig("local", "http://127.0.0.1:11434"),)


def test_repo_config_spells_out_every_setting() -> None:
    data = tomllib.loads((REPO / "config.toml").read_text())
    for section, cls in config._SECTIONS.items():
        assert set(data[section]) == {f.name for f in fields(cls)}, section
    assert set(data["backends"][0]) == {f.name for f in fields(config.BackendConfig)}
