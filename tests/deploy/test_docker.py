"""Issue 15.3: Dockerfile, compose.yaml and the container entrypoint.

Docker cannot run here, so the Dockerfile is read by a small parser and checked instruction by
instruction, compose.yaml is parsed as YAML and checked against the repository, and the entrypoint
runs outside Docker against a temporary directory, starting a real Fortress in front of the simulator.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import PY, ROOT, Sim, free_port

INSTRUCTIONS = {
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
    "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
}  # fmt: skip
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", re.I)


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        word, _, args = (pending + stripped).partition(" ")
        pending = ""
        assert word.upper() in INSTRUCTIONS, f"unknown instruction {word}"
        out.append((word.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def copy_args(args: str) -> tuple[list[str], list[str], str]:
    """COPY's flags, sources and destination."""
    words = args.split()
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return flags, paths[:-1], paths[-1]


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    steps = parse_dockerfile((ROOT / "Dockerfile").read_text())
    starts = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    assert starts and starts[0] == 0, "the Dockerfile must start with FROM"
    for i in starts:
        image = steps[i][1].split()[0]
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", image), f"not a slim Python base: {image}"
    return steps[starts[-1] :]


def test_the_image_runs_as_a_non_root_user(final_stage: list[tuple[str, str]]) -> None:
    ops = [op for op, _ in final_stage]
    users = [args for op, args in final_stage if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ops.index("USER") < ops.index("ENTRYPOINT")


def test_state_lives_on_a_volume_and_nothing_secret_is_baked_in(final_stage: list[tuple[str, str]]) -> None:
    volumes = [json.loads(args) for op, args in final_stage if op == "VOLUME"]
    assert ["/data"] in volumes
    env = " ".join(args for op, args in final_stage if op == "ENV")
    assert "FORTRESS_HOME=/data" in env and "FORTRESS_CONFIG=/data/config.toml" in env
    all_steps = parse_dockerfile((ROOT / "Dockerfile").read_text())
    for op, args in all_steps:
        if op in ("ENV", "ARG", "LABEL"):
            assert not SECRET_NAME.search(args), f"{op} {args}"
    ignored = [
        line for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] not in ("#", "")
    ]
    assert ignored[0] == "*"  # everything is left out of the build context, then a few paths let in...
    for pattern in ("**/*.db", "**/*.key", "**/*.pem", "**/*.secret"):
        assert pattern in ignored  # ...without state or secrets inside them


def test_every_copied_file_exists_and_is_sent_to_the_build(final_stage: list[tuple[str, str]]) -> None:
    included = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    ]
    steps = parse_dockerfile((ROOT / "Dockerfile").read_text())
    for op, args in steps:
        if op in ("COPY", "ADD"):
            flags, sources, _ = copy_args(args)
            if any(f.startswith("--from") for f in flags):
                continue
            for src in sources:
                assert (ROOT / src).exists(), src
                assert src.split("/")[0] in included, f"{src} is excluded by .dockerignore"


def test_entrypoint_healthcheck_and_command(final_stage: list[tuple[str, str]]) -> None:
    copies = {copy_args(args)[2]: copy_args(args)[1][0] for op, args in final_stage if op == "COPY"}
    entry = json.loads(next(args for op, args in final_stage if op == "ENTRYPOINT"))
    assert copies[entry[0]] == "docker/entrypoint.sh"
    assert json.loads(next(args for op, args in final_stage if op == "CMD")) == ["run"]
    health = next(args for op, args in final_stage if op == "HEALTHCHECK")
    command = json.loads(health.split(" CMD ", 1)[1])
    assert copies[command[-1]] == "docker/healthcheck.py"
    assert re.search(r"--timeout=\d+s", health) and re.search(r"--interval=\d+s", health)
    exposed = {p for op, args in final_stage if op == "EXPOSE" for p in args.split()}
    assert exposed == {"8080", "8081"}  # the entrypoint's default ports
    assert os.access(ROOT / "docker" / "entrypoint.sh", os.X_OK)


def test_compose_runs_fortress_in_front_of_an_unpublished_ollama() -> None:
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) == {"fortress", "ollama"}
    fortress, ollama = services["fortress"], services["ollama"]
    assert (ROOT / fortress["build"] / "Dockerfile").exists()
    assert fortress["environment"]["FORTRESS_BACKEND_URL"] == "http://ollama:11434"
    assert "ports" not in ollama and ollama["image"].startswith("ollama/ollama")
    assert "8080:8080" in fortress["ports"]
    assert "127.0.0.1:8081:8081" in fortress["ports"]  # the admin is not exposed beyond the host
    assert (
        ollama["healthcheck"]["test"] and fortress["depends_on"]["ollama"]["condition"] == "service_healthy"
    )
    for service in services.values():
        for volume in service.get("volumes", []):
            name = volume.split(":")[0]
            assert name in doc["volumes"], f"undeclared volume {name}"
    assert "fortress-data:/data" in fortress["volumes"]
    for name, value in fortress["environment"].items():  # no password written in the file itself
        if SECRET_NAME.search(name):
            assert str(value).startswith("${"), name
    assert fortress["environment"]["FORTRESS_ADMIN_PASSWORD"] == "${FORTRESS_ADMIN_PASSWORD:-}"


# ---- the entrypoint, outside Docker -----------------------------------------------------------------


@dataclass
class Container:
    """The entrypoint running `fortress run` with FORTRESS_HOME in a temporary directory."""

    home: Path
    proxy: int
    admin: int
    proc: subprocess.Popen | None = None
    output: str = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FORTRESS_")}
        env["PATH"] = f"{Path(PY).parent}:{env['PATH']}"  # the venv's python and fortress, as in the image
        env.update(FORTRESS_HOME=str(self.home), FORTRESS_PROXY_PORT=str(self.proxy))
        env.update(FORTRESS_ADMIN_PORT=str(self.admin), **extra)
        return env

    def start(self, backend: str, **extra: str) -> None:
        self.proc = subprocess.Popen(
            ["sh", str(ROOT / "docker" / "entrypoint.sh")],
            cwd=self.home.parent,
            env=self.env(FORTRESS_BACKEND_URL=backend, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not self.healthy():
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, "the entrypoint never brought Fortress up"
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            ok = httpx.get(f"http://127.0.0.1:{self.proxy}/health").status_code == 200
            return ok and httpx.get(f"http://127.0.0.1:{self.admin}/login").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
        self.output = self.proc.communicate(timeout=60)[0]
        assert self.proc.returncode == 0, self.output
        return self.output

    def login(self, password: str) -> bool:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.admin}") as c:
            token = re.search(r'name="_csrf_token" value="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
            r = c.post("/login", data={"username": "admin", "password": password, "_csrf_token": token})
            return r.status_code == 303

    def fortress(self, *args: str) -> str:
        res = subprocess.run(
            [PY, "-m", "fortress", *args], env=self.env(FORTRESS_CONFIG=str(self.home / "config.toml")),
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        return res.stdout

    def health_script(self) -> subprocess.CompletedProcess[str]:
        env = self.env(FORTRESS_CONFIG=str(self.home / "config.toml"))
        script = str(ROOT / "docker" / "healthcheck.py")
        return subprocess.run([PY, script], env=env, capture_output=True, text=True, timeout=30)


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    c = Container(tmp_path / "data", free_port(), free_port())
    yield c
    if c.proc is not None and c.proc.poll() is None:
        c.proc.kill()
        c.proc.wait()


def test_entrypoint_first_start_with_a_password_then_a_restart(container: Container, sim: Sim) -> None:
    password = "from the environment"
    container.start(sim.url, FORTRESS_ADMIN_PASSWORD=password)
    assert container.login(password)
    container.fortress("user", "add", "docker")
    key = container.fortress("key", "create", "--user", "docker").split()[0]
    auth = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 5
    while httpx.get(f"http://127.0.0.1:{container.proxy}/api/tags", headers=auth).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    checked = container.health_script()
    assert (checked.returncode, checked.stdout.strip()) == (0, "/health: 200")
    first = container.stop()
    assert "wrote" in first and "admin admin: created" in first and password not in first
    assert "admin password:" not in first
    config = container.home / "config.toml"
    assert config.stat().st_mode & 0o777 == 0o600
    assert f'url = "{sim.url}"' in config.read_text()
    assert container.health_script().returncode == 1  # nothing answers now

    container.start(sim.url)  # a restart: same volume, no password in the environment any more
    again = container.stop()
    assert "wrote" not in again and "admin already set up" in again and "admin password:" not in again
    container.start(sim.url, FORTRESS_ADMIN_PASSWORD="a different one")  # ignored after the first start
    assert container.login(password) and not container.login("a different one")
    assert key.split("_")[1] in container.fortress("key", "list")  # the key survived in the volume
    container.stop()


def test_entrypoint_generates_a_password_and_prints_it_once(container: Container, sim: Sim) -> None:
    container.start(sim.url)
    output = container.stop()
    printed = re.findall(r"admin password: (\S+)", output)
    assert len(printed) == 1, output
    container.start(sim.url)
    assert container.login(printed[0])
    assert "admin password:" not in container.stop()


def test_entrypoint_passes_other_commands_through(container: Container) -> None:
    res = subprocess.run(
        ["sh", str(ROOT / "docker" / "entrypoint.sh"), sys.executable, "-c", "print('hello')"],
        env=container.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.strip().endswith("hello")
