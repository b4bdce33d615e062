"""The `fortress` command end to end: real subprocesses, a real SQLite file, real HTTP to a backend."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import socket
import stat
import sys
import time

import aiosqlite

from admin import certstore
from fortress.passwords import verify_password
from fortress.proxy.tls import TlsFiles

from .conftest import FakeOllama, Fortress

KEY = re.compile(r"^fk_([a-z0-9]{8})_[A-Za-z0-9]{43}$")


def _one_line_error(res, code: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert res.returncode == code, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("fortress: "), res.stderr
    return res.stderr.strip()


def _config_version(f: Fortress) -> int:
    return int(f.query("SELECT value FROM meta WHERE key = 'config_version'")[0][0])


def test_init_is_idempotent_and_shows_a_generated_password_once(fortress: Fortress) -> None:
    out = fortress.ok("init")
    password = re.search(r"^admin password: (\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
    assert stat.S_IMODE(fortress.db_path.stat().st_mode) == 0o600
    (stored,) = fortress.query("SELECT password_hash FROM admins WHERE name = 'admin'")[0]
    assert verify_password(password, stored)

    again = fortress.ok("init")
    assert "nothing to change" in again and "password" not in again
    assert fortress.query("SELECT COUNT(*) FROM admins") == [(1,)]

    assert "ops: created" in fortress.ok(
        "init", "--admin-user", "ops", "--admin-password-stdin", stdin="first-password\n"
    )
    assert "password updated" in fortress.ok(
        "init", "--admin-user", "ops", "--admin-password-stdin", stdin="second-password\n"
    )
    (ops,) = fortress.query("SELECT password_hash FROM admins WHERE name = 'ops'")[0]
    assert verify_password("second-password", ops) and not verify_password("first-password", ops)
    _one_line_error(fortress.run("init", "--admin-user", "x", "--admin-password-stdin", stdin=""))


def test_commands_need_init_first(fortress: Fortress) -> None:
    message = _one_line_error(fortress.run("user", "list"))
    assert "run fortress init first" in message
    assert not fortress.db_path.exists()


def test_key_lifecycle_and_revoked_stays_revoked(fortress: Fortress) -> None:
    fortress.ok("init")
    v0 = _config_version(fortress)
    assert fortress.ok("user", "add", "alice") == "user alice: added\n"
    res = fortress.run(
        "key",
        "create",
        "--user",
        "alice",
        "--rate",
        "100/5m",
        "--tokens",
        "10000/1d",
        "--models",
        "llama*,qwen3:*",
        "--expires",
        "30d",
        "--name",
        "laptop",
        "--max-concurrent",
        "2",
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    m = KEY.match(lines[0])
    assert len(lines) == 1 and m
    key_id, secret = m.group(1), lines[0].rsplit("_", 1)[1]
    assert "not shown again" in res.stderr and secret not in res.stderr
    assert secret.encode() not in fortress.db_bytes()
    assert _config_version(fortress) >= v0 + 2

    listing = fortress.ok("key", "list", "--user", "alice")
    row = next(line for line in listing.splitlines() if line.startswith(key_id)).split()
    assert row[:8] == [key_id, "alice", "active", "user", "100/5m", "10000/1d", "2", "llama*,qwen3:*"]
    assert secret not in listing

    assert fortress.ok("key", "disable", key_id) == f"key {key_id}: disabled\n"
    assert fortress.ok("key", "enable", key_id) == f"key {key_id}: active\n"
    v1 = _config_version(fortress)
    assert fortress.ok("key", "revoke", key_id) == f"key {key_id}: revoked\n"
    assert _config_version(fortress) == v1 + 1
    message = _one_line_error(fortress.run("key", "enable", key_id))
    assert message == f"fortress: key {key_id} is revoked and cannot be enabled"
    assert fortress.query("SELECT state FROM api_keys WHERE id = ?", key_id) == [("revoked",)]
    actions = [a for (a,) in fortress.query("SELECT action FROM audit WHERE actor = 'cli' ORDER BY id")]
    assert actions[-5:] == ["user.add", "key.create", "key.disable", "key.enable", "key.revoke"]

    users = fortress.ok("user", "list").splitlines()
    assert users[1].split()[:2] == ["alice", "1"]
    assert "removed" in fortress.ok("user", "remove", "alice")
    assert fortress.query("SELECT COUNT(*) FROM api_keys") == [(0,)]
    _one_line_error(fortress.run("key", "list", "--user", "alice"))


def test_bad_input_is_one_line_without_traceback(fortress: Fortress) -> None:
    fortress.ok("init")
    fortress.ok("user", "add", "bob")
    assert "--rate" in _one_line_error(fortress.run("key", "create", "--user", "bob", "--rate", "lots"))
    assert "--expires" in _one_line_error(fortress.run("key", "create", "--user", "bob", "--expires", "x"))
    assert "no such user" in _one_line_error(fortress.run("key", "create", "--user", "carol"))
    _one_line_error(fortress.run("key", "create", "--user", "bob", "--max-concurrent", "many"), code=2)
    _one_line_error(fortress.run("key", "create"), code=2)
    _one_line_error(fortress.run("frobnicate"), code=2)
    assert "already exists" in _one_line_error(fortress.run("user", "add", "bob"))
    assert fortress.query("SELECT COUNT(*) FROM api_keys") == [(0,)]


def test_config_errors_name_the_key(fortress: Fortress) -> None:
    fortress.configure('listn = "127.0.0.1:8080"')
    assert _one_line_error(fortress.run("init")) == "fortress: unknown key proxy.listn"
    res = fortress.run("doctor")
    assert res.returncode == 1 and res.stdout == "fail  config: unknown key proxy.listn\n"
    fortress.configure('workers = "two"')
    assert "proxy.workers" in _one_line_error(fortress.run("user", "list"))
    fortress.config.unlink()
    assert "config file not found" in _one_line_error(fortress.run("init"))


def test_backends_add_list_check_remove(fortress: Fortress, fake_ollama: FakeOllama) -> None:
    fortress.ok("init")
    credential = "backend-token-0123456789abcdef"
    res = fortress.run(
        "backend",
        "add",
        "gpu",
        fake_ollama.url + "/",
        "--weight",
        "3",
        "--credential-env",
        "GPU_TOKEN",
        env={"GPU_TOKEN": credential},
    )
    assert res.returncode == 0, res.stderr
    assert credential.encode() not in fortress.db_bytes()
    assert stat.S_IMODE((fortress.root / "data" / "secrets.key").stat().st_mode) == 0o600
    listing = [line.split() for line in fortress.ok("backend", "list").splitlines()[1:]]
    assert [(r[0], r[1], r[4], r[-1]) for r in listing] == [
        ("local", "file", "1", "no"),
        ("gpu", "db", "3", "yes"),
    ]

    out = fortress.ok("backend", "check")
    assert [line.split()[:2] for line in out.splitlines()] == [["ok", "local"], ["ok", "gpu"]]
    assert "version 0.12.3" in out
    assert f"Bearer {credential}" in fake_ollama.authorizations  # decrypted and sent to that backend only
    assert fake_ollama.authorizations.count("") == 1

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    fortress.ok("backend", "add", "dead", dead)
    res = fortress.run("backend", "check")
    assert res.returncode == 1 and re.search(r"^fail\s+dead\s", res.stdout, re.M)

    assert "config.toml" in _one_line_error(fortress.run("backend", "remove", "local"))
    assert "--credential-env" in _one_line_error(
        fortress.run("backend", "add", "x", dead, "--credential-env", "UNSET_VARIABLE_FOR_TEST")
    )
    fortress.ok("backend", "remove", "dead")
    assert "no such backend" in _one_line_error(fortress.run("backend", "remove", "dead"))
    assert [a for (a,) in fortress.query("SELECT action FROM audit WHERE action LIKE 'backend.%'")] == [
        "backend.add",
        "backend.add",
        "backend.remove",
    ]


def test_doctor_and_cert(fortress: Fortress) -> None:
    res = fortress.run("doctor")
    assert res.returncode == 1 and "run fortress init first" in res.stdout
    fortress.ok("init")
    out = fortress.ok("doctor")
    assert [line.split()[0] for line in out.splitlines()] == ["ok", "ok", "ok", "ok", "info"]
    assert "journal mode: wal" in out

    fortress.ok("cert", "--host", "localhost", "--out", "tls")
    fortress.ok("cert", "--host", "127.0.0.1", "--out", "tls2")
    key = fortress.root / "tls" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (
        b"PRIVATE KEY" in key.read_bytes() and b"CERTIFICATE" in (fortress.root / "tls/cert.pem").read_bytes()
    )
    assert "--force" in _one_line_error(fortress.run("cert", "--host", "localhost", "--out", "tls"))

    fortress.configure('tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"')
    out = fortress.ok("doctor")
    assert "matches its key" in out
    fortress.configure('tls_cert = "tls/cert.pem"\ntls_key = "tls2/key.pem"')
    res = fortress.run("doctor")
    assert res.returncode == 1 and re.search(r"^fail .*does not match", res.stdout, re.M)


def test_doctor_checks_the_tls_pair_chosen_in_the_admin(fortress: Fortress) -> None:
    """The admin's /settings pair wins over config.toml's for the proxy (proxy/tls.py): doctor checks that
    one and says where it comes from."""
    fortress.ok("init")
    fortress.ok("cert", "--host", "localhost", "--out", "tls")
    fortress.ok("cert", "--host", "127.0.0.1", "--out", "tls2")
    assert "info  TLS: off" in fortress.ok("doctor")  # config.toml sets no pair

    def choose_in_admin(cert: str, key: str) -> None:  # what the admin's certificate form stores
        async def write() -> None:
            db = await aiosqlite.connect(fortress.db_path)
            try:
                files = TlsFiles(str(fortress.root / cert), str(fortress.root / key))
                await certstore.apply(db, files, actor="admin", ip="127.0.0.1", detail="test")
            finally:
                await db.close()

        asyncio.run(write())

    choose_in_admin("tls/cert.pem", "tls/key.pem")
    out = fortress.ok("doctor")
    assert re.search(r"^ok\s+TLS \(from the admin's /settings\): .*tls/cert.pem matches its key", out, re.M)
    choose_in_admin("tls/cert.pem", "tls2/key.pem")
    res = fortress.run("doctor")
    assert res.returncode == 1
    assert re.search(r"^fail\s+TLS \(from the admin's /settings\): .*does not match", res.stdout, re.M)


def test_interactive_init_asks_on_a_terminal(fortress: Fortress) -> None:
    """With a terminal, init asks for the name and the password (twice) instead of generating one."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the real command, its stdin a terminal
        os.chdir(fortress.root)
        os.execve(
            sys.executable,
            [sys.executable, "-m", "fortress", "init", "--config", str(fortress.config)],
            fortress.env,
        )
    transcript = b""

    def expect(prompt: bytes) -> None:
        nonlocal transcript
        deadline = time.monotonic() + 20
        while prompt not in transcript:
            assert time.monotonic() < deadline, transcript
            if select.select([fd], [], [], 0.2)[0]:
                transcript += os.read(fd, 1024)

    expect(b"admin user name [admin]: ")
    os.write(fd, b"boss\n")
    expect(b"admin password (empty = generate one): ")
    os.write(fd, b"typed-password\n")
    expect(b"again: ")
    os.write(fd, b"typed-password\n")
    expect(b"admin boss: created")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"typed-password" not in transcript  # not echoed
    (stored,) = fortress.query("SELECT password_hash FROM admins WHERE name = 'boss'")[0]
    assert verify_password("typed-password", stored)
