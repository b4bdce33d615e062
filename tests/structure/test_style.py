"""The whole repository passes `ruff check` and `ruff format --check` (pyproject's settings), so a file that
drifts from the house style fails the suite rather than the next helper's review."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [("check", "."), ("format", "--check", ".")])
def test_ruff_is_clean_for_the_whole_repository(command: tuple[str, ...]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "ruff", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
