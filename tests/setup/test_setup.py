"""Issue 2 acceptance: ./run.sh --demo brings up a working proxy; the package installs with its data."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import httpx

from tests.conftest import PY, ROOT, free_port, wait_port


def test_run_sh_demo_answers_curl_with_a_created_key(tmp_path: Path) -> None:
    ports = [free_port(), free_port(), free_port()]
    env = {
        **os.environ,
        "FORTRESS_DEMO_DIR": str(tmp_path / "demo"),
        "FORTRESS_DEMO_PORTS": " ".join(map(str, ports)),
    }
    proc = subprocess.Popen(
        ["./run.sh", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(ports[0], proc, timeout=120)
        config = str(tmp_path / "demo" / "config.toml")
        fortress = [PY, "-m", "fortress"]
        subprocess.run([*fortress, "user", "add", "demo", "--config", config], check=True, cwd=ROOT)
        key = subprocess.run(
            [*fortress, "key", "create", "--user", "demo", "--config", config],
            check=True,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.split()[0]
        wait_port(ports[2])
        url = f"http://127.0.0.1:{ports[0]}/api/tags"
        for _ in range(40):  # the proxy reloads keys within a second
            out = subprocess.run(
                ["curl", "-s", "-w", "\n%{http_code}", url, "-H", f"Authorization: Bearer {key}"],
                capture_output=True,
                text=True,
            ).stdout
            if out.endswith("200"):
                break
            time.sleep(0.1)
        assert out.endswith("200"), out
        assert '"models"' in out
        assert httpx.get(f"http://127.0.0.1:{ports[0]}/").text == "Ollama is running"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert "admin password:" in output  # generated and printed once, no terminal here
    assert "Fortress proxy:" in output and "key create" in output


def test_wheel_has_entry_point_schema_and_admin_assets(tmp_path: Path) -> None:
    subprocess.run(
        [PY, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    wheel = next(tmp_path.glob("fortress-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fortress/state/schema.sql" in names
    assert any(n.startswith("admin/templates/") for n in names)
    assert any(n.startswith("admin/static/") and n.endswith(".js") for n in names)
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "fortress = fortress.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()
