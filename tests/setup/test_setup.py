"""Issue 2 acceptance: ./run.sh --demo brings up a working proxy; the package installs with its data."""

from __future__ import annotations

import os
import signal
import subprocess
import zipfile
from pathlib import Path

import httpx

from tests.conftest import PY, ROOT, free_port, wait_port


def _readme_key_commands() -> list[str]:
    """The commands README's quick start prints after `./run.sh [--demo]`, exactly as written."""
    text = (ROOT / "README.md").read_text()
    after = text.split("Then create a key and call the proxy:", 1)[1]
    block = after.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def test_run_sh_demo_then_readme_commands_verbatim(tmp_path: Path) -> None:
    """Issue 11: `./run.sh --demo`, README's key commands as printed, then curl with the key: 200 at once."""
    proxy, admin, sim = free_port(), free_port(), free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{proxy}"\n[admin]\nlisten = "127.0.0.1:{admin}"\n'
        f'[database]\npath = "data/fortress.db"\n'
        f'[[backends]]\nname = "local"\nurl = "http://127.0.0.1:{sim}"\n'
    )
    env = {**os.environ, "FORTRESS_CONFIG": str(config)}
    proc = subprocess.Popen(
        ["./run.sh", "--demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(proxy, proc, timeout=120)
        wait_port(sim)
        commands = _readme_key_commands()
        assert [c.split()[:3] for c in commands[:2]] == [
            [".venv/bin/fortress", "user", "add"],
            [".venv/bin/fortress", "key", "create"],
        ]
        assert commands[2].startswith("curl ")
        for command in commands[:2]:
            out = subprocess.run(command, shell=True, cwd=ROOT, env=env, capture_output=True, text=True)
            assert out.returncode == 0, (command, out.stdout, out.stderr)
        key = out.stdout.split()[0]
        assert key.startswith("fk_")
        curl = commands[2].replace("fk_...", key).replace("127.0.0.1:8080", f"127.0.0.1:{proxy}")
        reply = subprocess.run(curl + " -s -w '\\n%{http_code}'", shell=True, capture_output=True, text=True)
        assert reply.stdout.endswith("200"), reply.stdout  # at once: the key works on the first try
        assert '"models"' in reply.stdout
        assert httpx.get(f"http://127.0.0.1:{proxy}/").text == "Ollama is running"
        assert (tmp_path / "data" / "fortress.db").exists()  # the config's own database, as a plain run
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert "admin password:" in output  # generated and printed once, no terminal here
    assert "starting the Ollama simulator" in output
    for command in commands[:2]:  # run.sh prints the same commands as README
        assert command.split("  ")[0].replace(".venv/bin/fortress", "") in output


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
