"""Issue 15.5: ./reset.sh asks before deleting Fortress's state, deletes nothing without a terminal or --yes,
and refuses while Fortress runs. It runs from a copy of the checkout (its own directory is what it
resets), with the real packages linked in and a stand-in .venv whose python is this interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from admin.secret import load_or_create
from fortress.metrics.table import MetricsTable
from tests.conftest import ROOT, Fortress, make_fortress


@pytest.fixture
def checkout(tmp_path: Path) -> Fortress:
    shutil.copy(ROOT / "reset.sh", tmp_path / "reset.sh")
    for package in ("fortress", "admin"):
        (tmp_path / package).symlink_to(ROOT / package)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(sys.executable)
    f = make_fortress(tmp_path, [], '[security]\nsecrets_key_file = "data/secrets.key"\n')
    f.cli("backend", "add", "remote", "http://127.0.0.1:9", "--credential-env", "HOME")  # makes secrets.key
    load_or_create(tmp_path / "data" / "admin-session.secret")  # as the admin's first start does
    MetricsTable.create(str(tmp_path / "data" / "metrics.shm"))  # as `fortress serve` does
    (tmp_path / "data" / "tls").mkdir()
    (tmp_path / "data" / "tls" / "uploaded-abc-cert.pem").write_text("cert")
    (tmp_path / "data" / "tls" / "cert.pem").write_text("mine")  # the user's own: kept
    return f


def state(f: Fortress) -> list[str]:
    files = [f.db, f.home / "data" / "secrets.key", f.home / "data" / "admin-session.secret"]
    files.append(f.home / "data" / "metrics.shm")
    files += [f.home / "data" / "tls" / "uploaded-abc-cert.pem", f.home / ".venv"]
    return [str(p) for p in files if p.exists()]


def reset(
    f: Fortress, *args: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(f.home / "reset.sh"), "--config", str(f.config), *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_terminal_and_without_yes_nothing_is_deleted(checkout: Fortress) -> None:
    before = state(checkout)
    assert len(before) == 6, before
    r = reset(checkout)
    assert r.returncode == 1
    assert "no terminal to ask on, so nothing was deleted" in r.stderr
    assert all(p in r.stdout for p in before)  # it says what it would delete
    assert state(checkout) == before


def test_at_a_terminal_only_yes_deletes(checkout: Fortress) -> None:
    before = state(checkout)
    for answer, deleted in (("y\n", False), ("no\n", False), ("yes\n", True)):
        leader, follower = os.openpty()
        try:
            os.write(leader, answer.encode())
            r = reset(checkout, stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        assert (state(checkout) == []) is deleted, (answer, r.stdout, r.stderr)
        if not deleted:
            assert state(checkout) == before and "nothing deleted" in r.stdout


def test_yes_deletes_state_and_keeps_config_and_own_certificates(checkout: Fortress) -> None:
    r = reset(checkout, "--yes")
    assert r.returncode == 0, r.stderr
    assert state(checkout) == []
    assert not list((checkout.home / "data").glob("fortress.db*"))
    assert checkout.config.exists() and (checkout.home / "data" / "tls" / "cert.pem").exists()
    again = reset(checkout, "--yes")
    assert again.returncode == 0 and "nothing to delete" in again.stdout


def test_keep_venv(checkout: Fortress) -> None:
    assert reset(checkout, "--yes", "--keep-venv").returncode == 0
    assert state(checkout) == [str(checkout.home / ".venv")]


def test_refuses_while_fortress_runs(checkout: Fortress) -> None:
    before = state(checkout)
    checkout.serve()
    try:
        r = reset(checkout, "--yes")
    finally:
        checkout.stop()
    assert r.returncode == 1 and "Fortress is running; stop it first" in r.stderr and "serve" in r.stderr
    assert state(checkout) == before
