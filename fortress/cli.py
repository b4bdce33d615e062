"""The `fortress` command: set-up, the processes, and day-to-day management without the admin.

Every command takes --config, works without a terminal, and fails with exactly one line
`fortress: <reason>` on stderr (exit 1; 2 for bad usage), never a traceback for a user error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import getpass
import ipaddress
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import aiosqlite

from fortress import backup, logs
from fortress import config as config_mod
from fortress.addr import redact_url
from fortress.backends.client import probe
from fortress.backends.kind import kind_names
from fortress.backends.target import Target
from fortress.config import Config, ConfigError
from fortress.passwords import generate_password
from fortress.proxy.tls import SETTING, effective_files
from fortress.state import db as dbmod
from fortress.state import repo
from fortress.state.load import load_snapshot
from fortress.state.secretbox import SecretBoxError, for_config, key_file_for
from fortress.state.snapshot import BackendRecord

ACTOR = "cli"
CHECK_TIMEOUT_S = 3.0
log = logging.getLogger("fortress.cli")


class CliError(Exception):
    """A failure to report as one line; exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"fortress: {message} (see fortress {self._sub_name()}--help)\n")
        raise SystemExit(2)

    def _sub_name(self) -> str:
        words = self.prog.split()[1:]
        return " ".join(words) + " " if words else ""


# ---- shared helpers ---------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return config_mod.load(getattr(args, "config", None))


async def _open_db(cfg: Config) -> aiosqlite.Connection:
    """Connect to an initialised database; never creates one (that is `fortress init`'s job)."""
    path = Path(cfg.database.path)
    if not path.exists():
        raise CliError(f"no database at {path}: run fortress init first")
    db = await dbmod.connect(path)
    if await dbmod.schema_version(db) < dbmod.latest_version():
        await db.close()
        raise CliError(f"database {path} is not initialised or is out of date: run fortress init first")
    return db


def _with_db(fn: Callable[[aiosqlite.Connection, Config, argparse.Namespace], Awaitable[int]]) -> Any:
    """Run an async command body with an open database, closed whatever happens."""

    def command(args: argparse.Namespace) -> int:
        cfg = _config(args)

        async def body() -> int:
            db = await _open_db(cfg)
            try:
                return await fn(db, cfg, args)
            finally:
                await db.close()

        return asyncio.run(body())

    return command


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells)


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else "-"


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# ---- init -------------------------------------------------------------------------------------------


def _read_stdin_password() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise CliError("--admin-password-stdin: no password on standard input")
    return password


def _ask_admin(name: str) -> tuple[str, str]:
    """Interactive set-up: the name (unless given) and a password typed twice, or a generated one."""
    name = name or input("admin user name [admin]: ").strip() or "admin"
    while True:
        password = getpass.getpass("admin password (empty = generate one): ")
        if not password:
            password = generate_password()
            print(f"admin password: {password}")
            return name, password
        if getpass.getpass("again: ") == password:
            return name, password
        _err("the passwords differ; try again")


async def _init(args: argparse.Namespace) -> int:
    cfg = _config(args)
    version = await dbmod.migrate(cfg.database.path)
    print(f"database ready: {cfg.database.path} (schema version {version})")
    db = await dbmod.connect(cfg.database.path)
    try:
        existing = await repo.admin_names(db)
        if args.admin_password_stdin:
            name, password = args.admin_user or "admin", _read_stdin_password()
            if name in existing:
                await repo.set_admin_password(db, name, password, actor=ACTOR)
                print(f"admin {name}: password updated")
            else:
                await repo.add_admin(db, name, password, actor=ACTOR)
                print(f"admin {name}: created")
            return 0
        if existing and (not args.admin_user or args.admin_user in existing):
            print(f"admin already set up ({', '.join(existing)}); nothing to change")
            return 0
        if sys.stdin.isatty():
            name, password = _ask_admin(args.admin_user)
        else:
            name, password = args.admin_user or "admin", generate_password()
            print(f"admin user: {name}")
            print(f"admin password: {password}")
            _err("store this password now: it is not shown again")
        await repo.add_admin(db, name, password, actor=ACTOR)
        print(f"admin {name}: created")
        return 0
    finally:
        await db.close()


# ---- processes --------------------------------------------------------------------------------------


def _require_db(cfg: Config) -> None:
    async def check() -> None:
        await (await _open_db(cfg)).close()

    asyncio.run(check())


def _serve(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if cfg.cluster.role != "node":
        _require_db(cfg)
    else:  # no database: the configuration comes from Redis; the data directory keeps its cache and tables
        cfg.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        from fortress.proxy.server import serve
    except ModuleNotFoundError as exc:
        if exc.name == "fortress.proxy.server":
            raise CliError("the proxy is not built yet") from None
        raise
    if cfg.cluster.role != "node":
        return int(serve(cfg) or 0)
    from fortress.cluster.subscriber import NoSnapshot

    try:
        return int(serve(cfg) or 0)
    except NoSnapshot as exc:
        raise CliError(f"this node cannot start: {exc}") from None


def _admin(args: argparse.Namespace) -> int:
    cfg = _config(args)
    _require_db(cfg)
    try:
        from admin.app import run
    except ModuleNotFoundError as exc:
        if exc.name in ("admin", "admin.app"):
            raise CliError("the admin is not built yet") from None
        raise
    return int(run(cfg) or 0)


def _sim(argv: list[str]) -> int:
    try:
        from fortress.sim.server import main as sim_main
    except ModuleNotFoundError as exc:
        if exc.name in ("fortress.sim", "fortress.sim.server"):
            raise CliError("the simulator is not built yet") from None
        raise
    return int(sim_main(argv) or 0)


class Supervisor:
    """Keeps `fortress serve` and `fortress admin` (and a control node's cluster process) running.

    A child that exits is restarted after a delay that doubles while it keeps dying young (1 s up to
    30 s); SIGTERM/SIGINT is forwarded to the children, which get drain_s to stop before SIGKILL.
    """

    def __init__(self, commands: dict[str, list[str]], drain_s: float, db_path: str) -> None:
        self.commands = commands
        self.drain_s = drain_s
        self.db_path = db_path
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            tasks = [asyncio.create_task(self._keep(name, cmd)) for name, cmd in self.commands.items()]
            await self.stopping.wait()
            log.info("stopping: forwarding SIGTERM to %s", ", ".join(self.procs))
            await asyncio.gather(*tasks)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0

    async def _keep(self, name: str, cmd: list[str]) -> None:
        quick_deaths = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            proc = self.procs[name] = await asyncio.create_subprocess_exec(*cmd)
            log.info("%s started (pid %d)", name, proc.pid)
            waiter = asyncio.create_task(proc.wait())
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # stopping: forward SIGTERM, then give the child its drain deadline
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), self.drain_s)
                except TimeoutError:
                    log.warning("%s did not stop within %.0f s; killing it", name, self.drain_s)
                    proc.kill()
                    await waiter
                return
            stop.cancel()
            if self.stopping.is_set():  # it died of the same signal that stops us
                return
            lived = time.monotonic() - started
            quick_deaths = quick_deaths + 1 if lived < 10 else 0
            delay = min(2.0 ** (quick_deaths - 1), 30.0)  # 0.5 s after a long life, then 1, 2, 4... 30
            log.error(
                "%s exited with status %s after %.1f s; restarting in %.1f s",
                name,
                proc.returncode,
                lived,
                delay,
            )
            await self._audit_restart(name, proc.returncode)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)

    async def _audit_restart(self, name: str, code: int | None) -> None:
        """Leave a trace in the audit log the admin shows; best effort, never fatal (a node has none)."""
        if not self.db_path:
            return
        try:
            db = await dbmod.connect(self.db_path)
            try:
                await repo.audit(db, "run", "process.restart", name, f"exit status {code}")
            finally:
                await db.close()
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not write the restart to the audit log: %s", exc)


def _run(args: argparse.Namespace) -> int:
    """The proxy and the admin; with [cluster] redis_url, the control node's cluster process too (a node
    runs only its proxy: the control node holds the database and the admin)."""
    cfg = _config(args)
    base = [sys.executable, "-m", "fortress"]
    extra = ["--config", cfg.source] if cfg.source else []
    commands = {"serve": [*base, "serve", *extra]}
    if cfg.cluster.role != "node":
        _require_db(cfg)
        commands["admin"] = [*base, "admin", *extra]
    if cfg.cluster.redis_url and cfg.cluster.role == "control":
        commands["cluster"] = [sys.executable, "-m", "fortress.cluster.control", *extra]
    logs.configure(cfg.logging)
    db_path = cfg.database.path if cfg.cluster.role != "node" else ""
    sup = Supervisor(commands, cfg.proxy.drain_timeout_s + 5.0, db_path)
    return asyncio.run(sup.run())


# ---- users and keys ---------------------------------------------------------------------------------


@_with_db
async def _user_add(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    await repo.add_user(db, args.name, actor=ACTOR)
    print(f"user {args.name}: added")
    return 0


@_with_db
async def _user_remove(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    await repo.remove_user(db, args.name, actor=ACTOR)
    print(f"user {args.name}: removed with all their keys")
    return 0


@_with_db
async def _user_list(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    rows = await repo.list_users(db, args.sort)
    print(
        _table(
            ("NAME", "KEYS", "REQUESTS", "TOKENS", "LAST ACTIVITY", "CREATED"),
            [
                (u.name, u.keys, u.requests, u.tokens, _when(u.last_activity), _when(u.created_at))
                for u in rows
            ],
        )
    )
    return 0


@_with_db
async def _key_create(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    full, row = await repo.create_key(
        db,
        args.user,
        actor=ACTOR,
        label=args.name,
        rate=args.rate,
        tokens=args.tokens,
        max_concurrent=args.max_concurrent,
        models=args.models,
        expires=args.expires,
        scope=args.scope,
        max_num_ctx=args.max_num_ctx,
        max_num_predict=args.max_num_predict,
        max_keep_alive=args.max_keep_alive,
        auto_models=args.auto_models,
    )
    print(full, flush=True)
    _err(f"key {row.id} for {row.user}: store it now, it is not shown again")
    return 0


@_with_db
async def _key_list(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    rows = await repo.list_keys(db, args.user)
    print(
        _table(
            (
                "ID",
                "USER",
                "STATE",
                "SCOPE",
                "RATE",
                "TOKENS",
                "CONCURRENT",
                "MODELS",
                "AUTO",
                "CAPS",
                "EXPIRES",
                "LABEL",
            ),
            [
                (
                    k.id,
                    k.user,
                    k.state,
                    k.scope,
                    k.rate or "-",
                    k.tokens or "-",
                    k.max_concurrent or "-",
                    k.models or "*",
                    k.auto_models or "-",
                    _key_caps(k),
                    _when(k.expires_at),
                    k.label,
                )
                for k in rows
            ],
        )
    )
    return 0


def _key_caps(k: repo.KeyRow) -> str:
    """The per-key model caps in one cell, e.g. 'ctx<=8192,predict<=512,keep_alive<=300s'."""
    caps = [
        f"{what}<={value}{unit}"
        for what, value, unit in (
            ("ctx", k.max_num_ctx, ""),
            ("predict", k.max_num_predict, ""),
            ("keep_alive", k.max_keep_alive_s, "s"),
        )
        if value is not None
    ]
    return ",".join(caps) or "-"


def _key_state(state: str) -> Any:
    @_with_db
    async def command(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
        row = await repo.set_key_state(db, args.id, state, actor=ACTOR)
        print(f"key {row.id}: {row.state}")
        return 0

    return command


# ---- backends ---------------------------------------------------------------------------------------


@_with_db
async def _backend_add(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    credential = ""
    if args.credential_env:
        credential = os.environ.get(args.credential_env, "")
        if not credential:
            raise CliError(f"--credential-env: environment variable {args.credential_env} is not set")
    await repo.add_backend(
        db,
        args.name,
        args.url,
        actor=ACTOR,
        type=args.type,
        weight=args.weight,
        models=args.models,
        credential=credential,
        box=for_config(cfg),
        file_backends=cfg.backends,
    )
    print(f"backend {args.name}: added")
    return 0


@_with_db
async def _backend_remove(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    if any(b.name == args.name for b in cfg.backends):
        raise CliError(f"backend {args.name} is declared in {cfg.source or 'config.toml'}; remove it there")
    await repo.remove_backend(db, args.name, actor=ACTOR)
    print(f"backend {args.name}: removed")
    return 0


@_with_db
async def _backend_list(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    rows = await repo.list_backends(db, cfg.backends)
    print(
        _table(
            ("NAME", "SOURCE", "TYPE", "URL", "WEIGHT", "MODELS", "CREDENTIAL"),
            [
                (
                    b.name,
                    b.source,
                    b.type,
                    redact_url(b.url),
                    b.weight,
                    b.models or "-",
                    "yes" if b.has_credential else "no",
                )
                for b in rows
            ],
        )
    )
    return 0


async def _check_one(b: BackendRecord) -> tuple[bool, str]:
    """The backend's health probe, through its Target as the proxy reaches it; (ok, detail)."""
    try:
        target = Target.from_record(b)
    except ValueError as exc:
        return False, str(exc)
    result = await probe(target, models=False, timeout_s=CHECK_TIMEOUT_S)
    if not result.ok:
        return False, result.error
    return True, f"version {result.version}" if result.version else f"{len(result.installed)} models listed"


async def _check_backends(backends: Sequence[BackendRecord]) -> list[tuple[BackendRecord, bool, str]]:
    results = await asyncio.gather(*(_check_one(b) for b in backends))
    return [(b, ok, detail) for b, (ok, detail) in zip(backends, results, strict=True)]


@_with_db
async def _backend_check(db: aiosqlite.Connection, cfg: Config, args: argparse.Namespace) -> int:
    snapshot = await load_snapshot(db, cfg)
    if not snapshot.backends:
        raise CliError("no backends configured")
    results = await _check_backends(snapshot.backends)
    for b, ok, detail in results:
        print(f"{'ok  ' if ok else 'fail'}  {b.name}  {redact_url(b.url)}  {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


# ---- doctor -----------------------------------------------------------------------------------------


def _tls_check(cert_path: str, key_path: str) -> tuple[bool, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return False, f"cannot read the certificate or key: {exc}"
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        return False, f"{key_path} does not match {cert_path}"
    expires = cert.not_valid_after_utc
    if expires < dt.datetime.now(dt.UTC):
        return False, f"{cert_path} expired on {expires:%Y-%m-%d}"
    return True, f"{cert_path} matches its key, valid until {expires:%Y-%m-%d}"


async def _doctor_db(
    cfg: Config, report: Callable[[bool, str], None]
) -> tuple[tuple[BackendRecord, ...], dict[str, str]]:
    """The database's checks; the backends and the settings rows (the admin's TLS pair among them)."""
    path = Path(cfg.database.path)
    try:
        db = await _open_db(cfg)
    except (CliError, sqlite3.Error) as exc:
        report(False, f"database: {exc}")
        return tuple(BackendRecord(b.name, b.url, b.type) for b in cfg.backends), {}
    try:
        report(True, f"database: {path} (schema version {await dbmod.schema_version(db)})")
        async with db.execute("PRAGMA journal_mode") as cur:
            mode = (await cur.fetchone())[0]  # type: ignore[index]
        report(mode == "wal", f"database journal mode: {mode}" + ("" if mode == "wal" else " (expected wal)"))
        settings = await repo.get_settings(db)
        try:
            return (await load_snapshot(db, cfg)).backends, settings
        except SecretBoxError as exc:
            report(False, f"secrets: {exc}")
            return (), settings
    finally:
        await db.close()


def _doctor(args: argparse.Namespace) -> int:
    failures = 0

    def report(ok: bool, text: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'fail'}  {text}")

    try:
        cfg = _config(args)
    except ConfigError as exc:
        report(False, f"config: {exc}")
        return 1
    report(True, f"config: {cfg.source or 'built-in defaults (no config file)'}")
    backends, settings = asyncio.run(_doctor_db(cfg, report))
    if not backends:
        report(False, "backends: none configured")
    for b, ok, detail in asyncio.run(_check_backends(backends)):
        report(ok, f"backend {b.name} ({redact_url(b.url)}): {detail}")
    files = effective_files(cfg, settings)  # the pair the proxy starts with, as it chooses it
    if files is None:
        print("info  TLS: off (proxy.tls_cert not set; put Fortress behind a TLS terminator or run cert)")
    else:
        ok, detail = _tls_check(files.cert, files.key)
        source = "config.toml" if SETTING not in settings else "the admin's /settings"
        report(ok, f"TLS (from {source}): {detail}")
    return 1 if failures else 0


# ---- cert -------------------------------------------------------------------------------------------


def self_signed(host: str, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed certificate for `host` (DNS name or IP address) and its key, both PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _cert(args: argparse.Namespace) -> int:
    cfg = _config(args)
    out = Path(args.out) if args.out else cfg.data_dir / "tls"
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    if not args.force and (cert_path.exists() or key_path.exists()):
        raise CliError(f"{out} already holds cert.pem or key.pem (use --force to replace them)")
    if not args.host or any(c.isspace() or c in "/\\" for c in args.host):
        raise CliError(f"--host: invalid host name {args.host!r}")
    cert_pem, key_pem = self_signed(args.host, args.days)
    out.mkdir(parents=True, exist_ok=True)
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert_pem)
    print(f"certificate: {cert_path}")
    print(f"private key: {key_path}")
    _err(f'set in [proxy]: tls_cert = "{cert_path}" and tls_key = "{key_path}"')
    return 0


# ---- backup and restore (fortress/backup.py) --------------------------------------------------------


def _backup(args: argparse.Namespace) -> int:
    cfg = _config(args)
    summary = backup.backup(cfg, Path(args.path), force=args.force)
    print(f"backup written: {summary.line()}")
    _err(f"backend credentials inside are encrypted with {key_file_for(cfg)}: keep a copy of it too")
    return 0


def _restore(args: argparse.Namespace) -> int:
    cfg = _config(args)
    summary, kept = backup.restore(cfg, Path(args.path))
    print(f"restored {summary.line()} into {cfg.database.path}")
    if kept:
        print(f"the database it replaced is kept as {kept}")
    return 0


# ---- the parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="config file (default ./config.toml or $FORTRESS_CONFIG)",
    )
    parser = _Parser(prog="fortress", parents=[common], description="Security gateway for Ollama.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def add(parent: Any, name: str, func: Callable[[argparse.Namespace], int], helptext: str) -> Any:
        p = parent.add_parser(name, parents=[common], help=helptext, description=helptext)
        p.set_defaults(func=func)
        return p

    p = add(sub, "init", lambda a: asyncio.run(_init(a)), "create or migrate the database; set up an admin")
    p.add_argument("--admin-user", metavar="NAME", default="")
    p.add_argument("--admin-password-stdin", action="store_true", help="read the admin password from stdin")
    add(sub, "serve", _serve, "run the proxy")
    add(sub, "admin", _admin, "run the web admin")
    add(sub, "run", _run, "run the proxy and the admin, restarting either if it dies")
    p = add(sub, "sim", lambda a: _sim(a.args), "run the Ollama simulator (arguments go to the simulator)")
    p.add_argument("args", nargs=argparse.REMAINDER)

    users = sub.add_parser("user", help="manage users").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )
    add(users, "add", _user_add, "add a user").add_argument("name")
    add(users, "remove", _user_remove, "remove a user and their keys").add_argument("name")
    p = add(users, "list", _user_list, "list users")
    p.add_argument(
        "--sort", default="name", help="name, created, keys, requests, tokens, last_activity; -X = desc"
    )

    keys = sub.add_parser("key", help="manage API keys").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )
    p = add(keys, "create", _key_create, "create a key (printed once)")
    p.add_argument("--user", required=True, metavar="NAME")
    p.add_argument("--rate", default="", metavar="N/WINDOW", help="requests per window, e.g. 100/5m")
    p.add_argument("--tokens", default="", metavar="N/WINDOW", help="tokens per window, e.g. 100000/1d")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="N")
    p.add_argument("--models", default="", metavar="GLOB,GLOB", help="allowed models (default all)")
    p.add_argument("--expires", default="", metavar="DURATION", help="e.g. 30d")
    p.add_argument("--scope", default="user", choices=repo.SCOPES)
    p.add_argument("--name", default="", metavar="LABEL")
    p.add_argument("--max-num-ctx", type=int, default=None, metavar="N", help="cap on options.num_ctx")
    p.add_argument(
        "--max-num-predict", type=int, default=None, metavar="N", help="cap on options.num_predict"
    )
    p.add_argument(
        "--max-keep-alive", default="", metavar="DURATION", help="cap on keep_alive, e.g. 5m (positive)"
    )
    p.add_argument(
        "--auto-models", default="", metavar="GLOB,GLOB", help='models "auto" may pick (default all)'
    )
    add(keys, "list", _key_list, "list keys").add_argument("--user", metavar="NAME")
    add(keys, "disable", _key_state("disabled"), "disable a key (reversible)").add_argument("id")
    add(keys, "enable", _key_state("active"), "enable a disabled key").add_argument("id")
    add(keys, "revoke", _key_state("revoked"), "revoke a key for good").add_argument("id")

    backends = sub.add_parser("backend", help="manage backends").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )
    p = add(backends, "add", _backend_add, "add a backend to the database")
    p.add_argument("name")
    p.add_argument("url")
    p.add_argument("--type", default="ollama", choices=kind_names())
    p.add_argument("--weight", type=int, default=1)
    p.add_argument("--credential-env", default="", metavar="VAR", help="env var holding the credential")
    p.add_argument("--models", default="", metavar="A,B", help="served models (openai type)")
    add(backends, "list", _backend_list, "list backends")
    add(backends, "remove", _backend_remove, "remove a database backend").add_argument("name")
    add(backends, "check", _backend_check, "probe every backend")

    add(sub, "doctor", _doctor, "check config, database, backends and TLS files")
    p = add(sub, "backup", _backup, "copy the database to PATH while Fortress runs (consistent)")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p = add(sub, "restore", _restore, "replace the database with the backup at PATH (Fortress stopped)")
    p.add_argument("path")
    p = add(sub, "cert", _cert, "write a self-signed certificate and key")
    p.add_argument("--host", required=True, metavar="NAME")
    p.add_argument("--out", default="", metavar="DIR", help="default: <database dir>/tls")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--force", action="store_true", help="replace existing files")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list[:1] == ["sim"]:
            return _sim(args_list[1:])
        args = build_parser().parse_args(args_list)
        return args.func(args)
    except (CliError, ConfigError, repo.RepoError, SecretBoxError, backup.BackupError) as exc:
        _err(f"fortress: {exc}")
    except sqlite3.Error as exc:
        _err(f"fortress: database error: {exc}")
    except OSError as exc:
        _err(f"fortress: {exc}")
    except KeyboardInterrupt:
        return 130
    return 1
