"""Fortress for the benchmarks: a fresh database, a real user key and admin key, one worker by default.

Several Fortress targets can run side by side (`fortress`; `fortress-nometrics` with `[metrics]
enabled = false`; `fortress-w2` with `workers = 2`): each gets its own home with a copy of one database, so
all accept the same keys and none writes into another's usage tables.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.nginx import MODEL
from bench.procs import Service, start

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Keys:
    user: str  # default policy: the key a normal client would hold
    admin: str  # admin scope: needed for /api/blobs uploads


@dataclass(frozen=True)
class Variant:
    """What sets a Fortress target apart from the others in a run."""

    metrics: bool = True  # [metrics] enabled
    workers: int = 1  # [proxy] workers


VARIANTS = {
    "fortress": Variant(),
    "fortress-nometrics": Variant(metrics=False),
    "fortress-w2": Variant(workers=2),
}


def config_text(
    port: int, upstream_port: int, db: Path, provider_port: int = 0, variant: Variant = Variant()
) -> str:
    """Default policy (usage recording included); body and idle limits sized for the workloads.

    With `provider_port`, an OpenAI-compatible provider "prov" serving the upstream's model there too
    (`prov/bench:latest`, translated from and to Ollama's API).
    """
    provider = (
        f"""
[[backends]]
name = "prov"
url = "http://127.0.0.1:{provider_port}/v1"
type = "openai"
models = ["{MODEL}"]
"""
        if provider_port
        else ""
    )
    return f"""[proxy]
listen = "127.0.0.1:{port}"
workers = {variant.workers}
max_body_bytes = {512 * 1024 * 1024}
idle_timeout_s = 300

[database]
path = "{db}"

[[backends]]
name = "bench-upstream"
url = "http://127.0.0.1:{upstream_port}"
type = "ollama"
{provider}
[metrics]
enabled = {str(variant.metrics).lower()}
"""


def _cli(config: Path, *args: str, stdin: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "fortress", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"fortress {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def prepare(
    workdir: Path, port: int, upstream_port: int, provider_port: int = 0, name: str = "fortress"
) -> tuple[Path, Keys]:
    """Write config.toml, create the database, a user and its two keys."""
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    config = home / "config.toml"
    config.write_text(config_text(port, upstream_port, home / "fortress.db", provider_port, VARIANTS[name]))
    _cli(
        config, "init", "--admin-user", "a", "--admin-password-stdin", stdin=secrets.token_urlsafe(16) + "\n"
    )
    _cli(config, "user", "add", "bench")
    user = _cli(config, "key", "create", "--user", "bench").splitlines()[0].strip()
    admin = _cli(config, "key", "create", "--user", "bench", "--scope", "admin").splitlines()[0].strip()
    return config, Keys(user=user, admin=admin)


def twin(config: Path, name: str, port: int, upstream_port: int, provider_port: int = 0) -> Path:
    """Another Fortress home beside `config`'s, with a copy of its database (the same keys)."""
    home = config.parent.parent / name
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(config.parent / "fortress.db", home / "fortress.db")
    twin_config = home / "config.toml"
    twin_config.write_text(
        config_text(port, upstream_port, home / "fortress.db", provider_port, VARIANTS[name])
    )
    return twin_config


def start_fortress(
    config: Path, port: int, cpu: str | None, workdir: Path, name: str = "fortress"
) -> Service:
    return start(
        name, [sys.executable, "-m", "fortress", "serve", "--config", str(config)], port, cpu, workdir
    )
