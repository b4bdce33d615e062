"""Issue 15.4: deploy/systemd/fortress.service passes `systemd-analyze verify` and is sandboxed.

systemd is not PID 1 in this container, so the unit is checked offline, in a scratch root holding
the system's unit files and a stand-in for /opt/fortress/bin/fortress (verify insists that ExecStart
points at an executable). test.sh installs the Debian systemd package when systemd-analyze is missing.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from fortress.config import parse
from tests.conftest import ROOT

UNIT = ROOT / "deploy" / "systemd" / "fortress.service"
ANALYZE = shutil.which("systemd-analyze")
pytestmark = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing: ./test.sh installs systemd")


def scratch_root(tmp: Path, unit_text: str) -> Path:
    root = tmp / "root"
    system = next(p for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if p.is_dir())
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/fortress.service").write_text(unit_text)
    fake = root / "opt/fortress/bin/fortress"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ANALYZE), *args, f"--root={root}", "fortress.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_unit_verifies_cleanly(tmp_path: Path) -> None:
    r = analyze(scratch_root(tmp_path, UNIT.read_text()), "verify")
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    broken = (
        UNIT.read_text()
        .replace("ProtectSystem=strict", "ProtectSystem=strictly")
        .replace("ExecStart=/opt/fortress/bin/fortress run", "ExecStart=/opt/nowhere/fortress run")
    )
    r = analyze(scratch_root(tmp_path, broken), "verify")
    assert r.returncode != 0 and "ignoring: strictly" in r.stderr and "/opt/nowhere/fortress" in r.stderr


def test_the_sandbox_keeps_exposure_low(tmp_path: Path) -> None:
    """systemd's own exposure score (0 = locked down, 10 = none): a unit without sandboxing scores 9.6."""
    r = analyze(scratch_root(tmp_path, UNIT.read_text()), "security", "--offline=true", "--threshold=25")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
    assert "Overall exposure level for fortress.service: 1." in r.stdout


def test_the_unit_has_the_sandbox_the_issue_asks_for() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["User"] == "fortress" or service.get("DynamicUser") == "yes"
    for key, value in {
        "ProtectSystem": "strict",
        "StateDirectory": "fortress",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    }.items():
        assert service[key] == value, key
    assert service["ExecStart"] == "/opt/fortress/bin/fortress run"


def test_the_example_config_keeps_the_database_in_the_state_directory() -> None:
    import tomllib

    cfg = parse(tomllib.loads((UNIT.parent / "config.toml.example").read_text()))
    assert Path(cfg.database.path).parent == Path("/var/lib/fortress")  # StateDirectory=fortress
    assert cfg.admin.listen.startswith("127.0.0.1:")
