"""Configuration reads and writes shared by the CLI and the admin (async, aiosqlite).

CONTRACT (the admin and CLI code against these names):
every writer takes `actor` and `ip` and appends one `audit` row in the same transaction;
no function ever returns or logs a key secret except create_key, which returns the full key once,
and get_playground_key, which gives the admin process back its own playground key (stored encrypted).
Errors a user can cause raise RepoError with a one-line message.
Connections come from fortress.state.db.connect (autocommit; writers open their own transaction).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import aiosqlite

from fortress import keys as keyfmt
from fortress.backends.kind import kind_names
from fortress.config import BackendConfig, ConfigError, LimitsConfig, RoutingConfig, SecurityConfig, _coerce
from fortress.passwords import hash_password
from fortress.pipeline.windows import format_rate, parse_duration, parse_rate
from fortress.state.db import transaction
from fortress.state.secretbox import SecretBox
from fortress.state.snapshot import OVERRIDABLE


class RepoError(ValueError):
    """A user-caused failure (duplicate name, unknown key, revoked key re-enabled...)."""


@dataclass(frozen=True)
class UserRow:
    name: str
    created_at: float
    keys: int
    requests: int
    tokens: int
    last_activity: float | None


@dataclass(frozen=True)
class KeyRow:
    id: str
    user: str
    label: str
    state: str  # active | disabled | revoked | expired (expired is derived from expires_at)
    scope: str
    models: str
    rate: str  # "N/WINDOW" or ""
    tokens: str
    max_concurrent: int | None
    expires_at: float | None
    created_at: float
    max_num_ctx: int | None = None  # caps the proxy clamps options.num_ctx / num_predict / keep_alive to
    max_num_predict: int | None = None
    max_keep_alive_s: int | None = None
    auto_models: str = ""  # globs narrowing model "auto" ('' = no narrowing)


@dataclass(frozen=True)
class BackendRow:
    name: str
    url: str
    type: str
    weight: int
    models: str
    max_concurrent: int
    source: str  # file | db
    has_credential: bool


KEY_STATES = ("active", "disabled", "revoked")
SCOPES = ("user", "search", "admin")  # search: user, plus /api/web_search and /api/web_fetch
ADMIN_ROLES = ("admin", "viewer")
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
_BACKEND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MODEL_GLOB = re.compile(r"^[A-Za-z0-9._:/*?\[\]-]{1,200}$")
_KEY_ID = re.compile(r"^[a-z0-9]{8}$")
_USER_ORDER = {
    "name": "u.name",
    "created": "u.created_at",
    "keys": "keys",
    "requests": "requests",
    "tokens": "tokens",
    "last_activity": "last_activity",
}
_SECTIONS = {"security": SecurityConfig, "limits": LimitsConfig, "routing": RoutingConfig}
_SETTING_FIELDS = {
    key: next(f for f in fields(_SECTIONS[section]) if f.name == name)
    for key, (section, name) in OVERRIDABLE.items()
}


# ---- validation (pure) ----------------------------------------------------------------------------


def check_user_name(name: str) -> str:
    if not _USER_NAME.match(name):
        raise RepoError(f"invalid user name {name!r} (letters, digits and . _ @ + -, at most 64)")
    return name


def check_backend_name(name: str) -> str:
    if not _BACKEND_NAME.match(name):
        raise RepoError(f"invalid backend name {name!r} (letters, digits and . _ -, at most 64)")
    return name


def check_models(text: str) -> str:
    """Normalise a comma-separated glob list ('' = all models)."""
    globs = [g.strip() for g in text.split(",") if g.strip()]
    for g in globs:
        if not _MODEL_GLOB.match(g):
            raise RepoError(f"invalid model pattern {g!r}")
    return ",".join(globs)


def normalise_key_id(text: str) -> str:
    """Accept the bare id or the displayed form fk_<id>_…; never needs the secret."""
    key_id = text[3:11] if text.startswith(keyfmt.PREFIX) else text
    if not _KEY_ID.match(key_id):
        raise RepoError(f"invalid key id {text!r} (the 8-character id shown by 'key list')")
    return key_id


def _rate(text: str, what: str) -> tuple[int | None, int | None]:
    if not text:
        return None, None
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise RepoError(f"{what}: {exc}") from None


def _positive(value: int | None, what: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise RepoError(f"{what}: must be a positive integer")
    return value


def _duration(text: str, what: str) -> int | None:
    """'' = not set; otherwise a positive duration in seconds ('5m', '3600')."""
    if not text:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise RepoError(f"{what}: {exc}") from None


def check_backend_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) > 2000 or any(c.isspace() for c in url):
        raise RepoError(f"invalid backend URL {url!r} (must start with http:// or https://)")
    return url


def check_backend_type(type: str) -> str:
    known = kind_names()  # asked each time: every kind registered, whenever its module was imported
    if type not in known:
        raise RepoError(f"invalid backend type {type!r} (use {' or '.join(known)})")
    return type


def check_backend_max_concurrent(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RepoError("max_concurrent: must be 0 (unlimited) or a positive integer")
    return value


# ---- audit ------------------------------------------------------------------------------------------


async def audit(
    db: aiosqlite.Connection, actor: str, action: str, target: str = "", detail: str = "", ip: str = ""
) -> None:
    """Append one audit row (joins the caller's transaction when there is one). Never pass a secret."""
    await db.execute(
        "INSERT INTO audit (ts, actor, ip, action, target, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (time.time(), actor, ip, action, target, detail),
    )


# ---- users ------------------------------------------------------------------------------------------


async def _user_id(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute("SELECT id FROM users WHERE name = ?", (name,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise RepoError(f"no such user {name!r}")
    return int(row[0])


async def add_user(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None:
    check_user_name(name)
    async with transaction(db):
        try:
            await db.execute("INSERT INTO users (name, created_at) VALUES (?, ?)", (name, time.time()))
        except sqlite3.IntegrityError:
            raise RepoError(f"user {name!r} already exists") from None
        await audit(db, actor, "user.add", name, ip=ip)


async def remove_user(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None:
    """Remove a user and (by cascade) all their keys."""
    async with transaction(db):
        user_id = await _user_id(db, name)
        async with db.execute("SELECT COUNT(*) FROM api_keys WHERE user_id = ?", (user_id,)) as cur:
            (count,) = await cur.fetchone()  # type: ignore[misc]
        await db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        await audit(db, actor, "user.remove", name, f"{count} keys removed", ip=ip)


async def list_users(db: aiosqlite.Connection, order: str = "name") -> list[UserRow]:
    """Users with key counts and usage totals; order is a column name, '-column' for descending."""
    column = _USER_ORDER.get(order.lstrip("-"))
    if column is None:
        raise RepoError(f"cannot sort users by {order!r} (use one of {', '.join(_USER_ORDER)})")
    direction = "DESC" if order.startswith("-") else "ASC"
    sql = f"""
        SELECT u.name, u.created_at,
               (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id) AS keys,
               COALESCE(h.requests, 0) AS requests, COALESCE(h.tokens, 0) AS tokens,
               (SELECT MAX((SELECT MAX(x.ts) FROM usage x WHERE x.key_id = k.id))
                  FROM api_keys k WHERE k.user_id = u.id) AS last_activity
          FROM users u
          LEFT JOIN (SELECT user_name, SUM(requests) AS requests,
                            SUM(prompt_tokens + completion_tokens) AS tokens
                       FROM usage_hourly GROUP BY user_name) h ON h.user_name = u.name
         ORDER BY {column} {direction}, u.name ASC
    """
    async with db.execute(sql) as cur:
        rows = await cur.fetchall()
    return [UserRow(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


# ---- keys -------------------------------------------------------------------------------------------

_KEY_SELECT = """
    SELECT k.id, u.name AS user, k.label, k.state, k.scope, k.models, k.rate_count, k.rate_window_s,
           k.token_count, k.token_window_s, k.max_concurrent, k.expires_at, k.created_at,
           k.max_num_ctx, k.max_num_predict, k.max_keep_alive_s, k.auto_models
      FROM api_keys k JOIN users u ON u.id = k.user_id
"""


def _key_row(r: sqlite3.Row, now: float) -> KeyRow:
    state = r["state"]
    if state == "active" and r["expires_at"] is not None and r["expires_at"] <= now:
        state = "expired"
    return KeyRow(
        id=r["id"],
        user=r["user"],
        label=r["label"],
        state=state,
        scope=r["scope"],
        models=r["models"],
        rate=format_rate(r["rate_count"], r["rate_window_s"]),
        tokens=format_rate(r["token_count"], r["token_window_s"]),
        max_concurrent=r["max_concurrent"],
        expires_at=r["expires_at"],
        created_at=r["created_at"],
        max_num_ctx=r["max_num_ctx"],
        max_num_predict=r["max_num_predict"],
        max_keep_alive_s=r["max_keep_alive_s"],
        auto_models=r["auto_models"],
    )


async def get_key(db: aiosqlite.Connection, key_id: str) -> KeyRow:
    key_id = normalise_key_id(key_id)
    async with db.execute(_KEY_SELECT + " WHERE k.id = ?", (key_id,)) as cur:
        row = await cur.fetchone()
    if row is None:
        raise RepoError(f"no such key {key_id!r}")
    return _key_row(row, time.time())


async def create_key(
    db: aiosqlite.Connection,
    user: str,
    *,
    actor: str,
    ip: str = "",
    label: str = "",
    rate: str = "",
    tokens: str = "",
    max_concurrent: int | None = None,
    models: str = "",
    expires: str = "",
    scope: str = "user",
    max_num_ctx: int | None = None,
    max_num_predict: int | None = None,
    max_keep_alive: str = "",
    auto_models: str = "",
) -> tuple[str, KeyRow]:
    """Create a key; returns (the full key, shown once and never stored, its row).

    max_num_ctx / max_num_predict / max_keep_alive ('5m') cap what a request may ask of a model;
    None or '' leaves that cap off. auto_models (globs, in order) narrows what model "auto" picks.
    """
    rate_count, rate_window = _rate(rate, "--rate")
    token_count, token_window = _rate(tokens, "--tokens")
    _positive(max_concurrent, "--max-concurrent")
    _positive(max_num_ctx, "--max-num-ctx")
    _positive(max_num_predict, "--max-num-predict")
    max_keep_alive_s = _duration(max_keep_alive, "--max-keep-alive")
    models = check_models(models)
    auto_models = check_models(auto_models)
    if scope not in SCOPES:
        raise RepoError(f"invalid scope {scope!r} (use one of {', '.join(SCOPES)})")
    if len(label) > 100 or not label.isprintable():
        raise RepoError("key label: at most 100 printable characters")
    now = time.time()
    expires_at = None
    if expires:
        try:
            expires_at = now + parse_duration(expires)
        except ValueError as exc:
            raise RepoError(f"--expires: {exc}") from None
    async with transaction(db):
        user_id = await _user_id(db, user)
        for _ in range(5):  # 36^8 ids: a collision is rare, and a retry fixes it
            full, key_id, secret_hash = keyfmt.generate()
            try:
                await db.execute(
                    """INSERT INTO api_keys (id, user_id, label, secret_hash, scope, models, rate_count,
                       rate_window_s, token_count, token_window_s, max_concurrent, expires_at, created_at,
                       max_num_ctx, max_num_predict, max_keep_alive_s, auto_models)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                    (
                        key_id,
                        user_id,
                        label,
                        secret_hash,
                        scope,
                        models,
                        rate_count,
                        rate_window,
                        token_count,
                        token_window,
                        max_concurrent,
                        expires_at,
                        now,
                        max_num_ctx,
                        max_num_predict,
                        max_keep_alive_s,
                        auto_models,
                    ),
                )
                break
            except sqlite3.IntegrityError:
                continue
        else:  # pragma: no cover - five collisions in a row
            raise RepoError("could not allocate a key id, try again")
        detail = json.dumps(
            {
                "scope": scope,
                "rate": rate,
                "tokens": tokens,
                "models": models,
                "expires": expires,
                "label": label,
                "max_num_ctx": max_num_ctx,
                "max_num_predict": max_num_predict,
                "max_keep_alive_s": max_keep_alive_s,
                "auto_models": auto_models,
            }
        )
        await audit(db, actor, "key.create", key_id, detail, ip=ip)
    return full, await get_key(db, key_id)


async def list_keys(db: aiosqlite.Connection, user: str | None = None) -> list[KeyRow]:
    if user is None:
        sql, args = _KEY_SELECT + " ORDER BY u.name, k.created_at", ()
    else:
        await _user_id(db, user)
        sql, args = _KEY_SELECT + " WHERE u.name = ? ORDER BY k.created_at", (user,)
    async with db.execute(sql, args) as cur:
        rows = await cur.fetchall()
    now = time.time()
    return [_key_row(r, now) for r in rows]


async def set_key_state(
    db: aiosqlite.Connection, key_id: str, state: str, *, actor: str, ip: str = ""
) -> KeyRow:
    """Move a key between active and disabled, or revoke it for good; revoked is final."""
    key_id = normalise_key_id(key_id)
    if state not in KEY_STATES:
        raise RepoError(f"invalid key state {state!r} (use {', '.join(KEY_STATES)})")
    async with transaction(db):
        async with db.execute("SELECT state FROM api_keys WHERE id = ?", (key_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise RepoError(f"no such key {key_id!r}")
        current = row[0]
        if current == "revoked" and state != "revoked":
            verb = "enabled" if state == "active" else "disabled"
            raise RepoError(f"key {key_id} is revoked and cannot be {verb}")
        if current != state:
            revoked_at = time.time() if state == "revoked" else None
            await db.execute(
                "UPDATE api_keys SET state = ?, revoked_at = ? WHERE id = ?", (state, revoked_at, key_id)
            )
            action = {"active": "key.enable", "disabled": "key.disable", "revoked": "key.revoke"}[state]
            await audit(db, actor, action, key_id, ip=ip)
    return await get_key(db, key_id)


# ---- backends ---------------------------------------------------------------------------------------


async def default_box(db: aiosqlite.Connection) -> SecretBox:
    """The secret box next to this database file (used when the caller has no Config at hand)."""
    async with db.execute("PRAGMA database_list") as cur:
        rows = await cur.fetchall()
    main = next(r[2] for r in rows if r[1] == "main")
    return SecretBox(Path(main).parent / "secrets.key")


async def add_backend(
    db: aiosqlite.Connection,
    name: str,
    url: str,
    *,
    actor: str,
    ip: str = "",
    type: str = "ollama",
    weight: int = 1,
    models: str = "",
    credential: str = "",
    max_concurrent: int = 0,
    box: SecretBox | None = None,
    file_backends: Iterable[BackendConfig] = (),
) -> None:
    """Store a backend; its credential is encrypted with `box` (default: secrets.key by the db)."""
    check_backend_name(name)
    if name in {b.name for b in file_backends}:
        raise RepoError(f"backend {name!r} is declared in config.toml")
    check_backend_url(url)
    check_backend_type(type)
    _positive(weight, "weight")
    check_backend_max_concurrent(max_concurrent)
    models = check_models(models)
    encrypted = (box or await default_box(db)).encrypt(credential) if credential else None
    async with transaction(db):
        try:
            await db.execute(
                """INSERT INTO backends (name, url, type, weight, models, credential_enc, max_concurrent,
                   created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (name, url.rstrip("/"), type, weight, models, encrypted, max_concurrent, time.time()),
            )
        except sqlite3.IntegrityError:
            raise RepoError(f"backend {name!r} already exists") from None
        detail = json.dumps(
            {"url": url, "type": type, "weight": weight, "models": models, "credential": bool(credential)}
        )
        await audit(db, actor, "backend.add", name, detail, ip=ip)


async def update_backend(
    db: aiosqlite.Connection,
    name: str,
    *,
    actor: str,
    ip: str = "",
    url: str | None = None,
    weight: int | None = None,
    models: str | None = None,
    credential: str | None = None,
    max_concurrent: int | None = None,
    type: str | None = None,
    box: SecretBox | None = None,
    file_backends: Iterable[BackendConfig] = (),
) -> None:
    """Change a database backend in place (the proxy picks it up on its next version poll).

    None leaves a field as it is; credential "" removes the stored credential, any other value
    replaces it (encrypted with `box`). Only fields that really change are written and audited;
    a save that changes nothing writes nothing. Backends from config.toml are refused.
    """
    if name in {b.name for b in file_backends}:
        raise RepoError(f"backend {name!r} is declared in config.toml; edit the file to change it")
    wanted: dict[str, object] = {}
    if url is not None:
        wanted["url"] = check_backend_url(url).rstrip("/")
    if weight is not None:
        wanted["weight"] = _positive(weight, "weight")
    if models is not None:
        wanted["models"] = check_models(models)
    if max_concurrent is not None:
        wanted["max_concurrent"] = check_backend_max_concurrent(max_concurrent)
    if type is not None:
        wanted["type"] = check_backend_type(type)
    encrypted = (box or await default_box(db)).encrypt(credential) if credential else None
    async with transaction(db):
        async with db.execute(
            "SELECT url, weight, models, max_concurrent, type, credential_enc IS NOT NULL"
            " FROM backends WHERE name = ?",
            (name,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            raise RepoError(f"no such backend {name!r} in the database")
        current = dict(zip(("url", "weight", "models", "max_concurrent", "type"), row[:5], strict=True))
        changes = {k: v for k, v in wanted.items() if current[k] != v}
        detail: dict[str, object] = dict(changes)
        if credential:
            changes["credential_enc"], detail["credential"] = encrypted, "replaced"
        elif credential == "" and row[5]:
            changes["credential_enc"], detail["credential"] = None, "removed"
        if not changes:
            return
        assignments = ", ".join(f"{column} = ?" for column in changes)  # column names are ours, not input
        await db.execute(f"UPDATE backends SET {assignments} WHERE name = ?", (*changes.values(), name))
        await audit(db, actor, "backend.update", name, json.dumps(detail), ip=ip)


async def remove_backend(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None:
    async with transaction(db):
        cur = await db.execute("DELETE FROM backends WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise RepoError(f"no such backend {name!r} in the database")
        await audit(db, actor, "backend.remove", name, ip=ip)


async def list_backends(
    db: aiosqlite.Connection, file_backends: Iterable[BackendConfig] = ()
) -> list[BackendRow]:
    """Backends from config.toml (source 'file', read-only) then those stored in the database."""
    out = [
        BackendRow(
            b.name,
            b.url,
            b.type,
            b.weight,
            ",".join(b.models),
            b.max_concurrent,
            "file",
            bool(b.credential_env),
        )
        for b in file_backends
    ]
    async with db.execute(
        "SELECT name, url, type, weight, models, max_concurrent, credential_enc IS NOT NULL"
        " FROM backends ORDER BY name"
    ) as cur:
        rows = await cur.fetchall()
    out.extend(BackendRow(r[0], r[1], r[2], r[3], r[4], r[5], "db", bool(r[6])) for r in rows)
    return out


# ---- settings ---------------------------------------------------------------------------------------


async def get_settings(db: aiosqlite.Connection) -> dict[str, str]:
    async with db.execute("SELECT key, value FROM settings") as cur:
        return {r[0]: r[1] for r in await cur.fetchall()}


def check_setting(key: str, value_json: str) -> None:
    """A policy override must name a known setting and carry a value of its type."""
    field = _SETTING_FIELDS.get(key)
    if field is None:
        raise RepoError(f"unknown setting {key!r}")
    try:
        value = json.loads(value_json)
        _coerce(key, field.type, value)
        if key in ("limits.rate", "limits.tokens") and value:
            parse_rate(value)
    except (ValueError, ConfigError) as exc:
        raise RepoError(f"{key}: {exc}") from None


async def set_setting(
    db: aiosqlite.Connection, key: str, value_json: str, *, actor: str, ip: str = ""
) -> None:
    check_setting(key, value_json)
    async with transaction(db):
        await db.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (key, value_json, time.time()),
        )
        await audit(db, actor, "setting.set", key, value_json, ip=ip)


async def delete_setting(db: aiosqlite.Connection, key: str, *, actor: str, ip: str = "") -> None:
    """Drop an override so config.toml's value applies again."""
    async with transaction(db):
        cur = await db.execute("DELETE FROM settings WHERE key = ?", (key,))
        if cur.rowcount:
            await audit(db, actor, "setting.reset", key, ip=ip)


# ---- admins -----------------------------------------------------------------------------------------


async def add_admin(
    db: aiosqlite.Connection,
    name: str,
    password: str,
    role: str = "admin",
    *,
    actor: str = "cli",
    ip: str = "",
) -> None:
    check_user_name(name)
    if role not in ADMIN_ROLES:
        raise RepoError(f"invalid admin role {role!r} (use admin or viewer)")
    if len(password) < 8:
        raise RepoError("admin password: at least 8 characters")
    password_hash = hash_password(password)
    async with transaction(db):
        try:
            await db.execute(
                "INSERT INTO admins (name, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
                (name, password_hash, role, time.time()),
            )
        except sqlite3.IntegrityError:
            raise RepoError(f"admin {name!r} already exists") from None
        await audit(db, actor, "admin.add", name, role, ip=ip)


async def set_admin_password(
    db: aiosqlite.Connection, name: str, password: str, *, actor: str = "cli", ip: str = ""
) -> None:
    if len(password) < 8:
        raise RepoError("admin password: at least 8 characters")
    password_hash = hash_password(password)
    async with transaction(db):
        cur = await db.execute("UPDATE admins SET password_hash = ? WHERE name = ?", (password_hash, name))
        if cur.rowcount == 0:
            raise RepoError(f"no such admin {name!r}")
        await audit(db, actor, "admin.password", name, ip=ip)


async def admin_names(db: aiosqlite.Connection) -> list[str]:
    async with db.execute("SELECT name FROM admins ORDER BY name") as cur:
        return [r[0] for r in await cur.fetchall()]


# ---- playground keys --------------------------------------------------------------------------------


async def create_playground_key(
    db: aiosqlite.Connection, admin: str, user: str, label: str, box: SecretBox, *, ip: str = ""
) -> KeyRow:
    """A new key of `user` for `admin`'s playground, kept encrypted so the admin process can use it.

    It replaces (and revokes) the admin's previous playground key: that secret was never shown to
    anyone, so nothing else can be using it. Its scope is `search`, so the playground's web search goes
    through the proxy's /api/web_search with it, like any client's.
    """
    full, row = await create_key(
        db, user, actor=admin, ip=ip, label=label or f"playground ({admin})", scope="search"
    )
    secret_enc = box.encrypt(full)
    async with transaction(db):
        async with db.execute("SELECT key_id FROM playground_keys WHERE admin_name = ?", (admin,)) as cur:
            old = await cur.fetchone()
        await db.execute(
            "INSERT INTO playground_keys (admin_name, key_id, secret_enc, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(admin_name) DO UPDATE SET key_id = excluded.key_id,"
            " secret_enc = excluded.secret_enc, created_at = excluded.created_at",
            (admin, row.id, secret_enc, time.time()),
        )
        await audit(db, admin, "playground.key", row.id, f"user {user}", ip=ip)
    if old is not None:
        await set_key_state(db, old[0], "revoked", actor=admin, ip=ip)
    return row


async def get_playground_key(
    db: aiosqlite.Connection, admin: str, box: SecretBox
) -> tuple[KeyRow, str] | None:
    """`admin`'s playground key: its row and the full key (decrypted), or None when there is none."""
    async with db.execute(
        "SELECT key_id, secret_enc FROM playground_keys WHERE admin_name = ?", (admin,)
    ) as cur:
        found = await cur.fetchone()
    if found is None:
        return None
    try:
        full = box.decrypt(found[1])
    except ValueError:  # SecretBoxError: the secrets key file was replaced
        raise RepoError(
            "the stored playground key cannot be decrypted (secrets key file changed): create a new one"
        ) from None
    return await get_key(db, found[0]), full


async def forget_playground_key(db: aiosqlite.Connection, admin: str, *, ip: str = "") -> None:
    """Drop `admin`'s stored playground key and revoke it (nobody else holds its secret)."""
    async with transaction(db):
        async with db.execute("SELECT key_id FROM playground_keys WHERE admin_name = ?", (admin,)) as cur:
            found = await cur.fetchone()
        if found is None:
            raise RepoError("there is no playground key to forget")
        await db.execute("DELETE FROM playground_keys WHERE admin_name = ?", (admin,))
    await set_key_state(db, found[0], "revoked", actor=admin, ip=ip)
