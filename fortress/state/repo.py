"""Configuration reads and writes shared by the CLI and the admin (async, aiosqlite).

CONTRACT (filled in by the state work; the admin and CLI code against these names):
every writer takes `actor` and `ip` and appends one `audit` row in the same transaction;
no function ever returns or logs a key secret except create_key, which returns the full key once.
Errors a user can cause raise RepoError with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite


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


async def add_user(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None: ...
async def remove_user(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None: ...
async def list_users(db: aiosqlite.Connection, order: str = "name") -> list[UserRow]: ...
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
) -> tuple[str, KeyRow]: ...
async def list_keys(db: aiosqlite.Connection, user: str | None = None) -> list[KeyRow]: ...
async def set_key_state(
    db: aiosqlite.Connection, key_id: str, state: str, *, actor: str, ip: str = ""
) -> KeyRow: ...
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
) -> None: ...
async def remove_backend(db: aiosqlite.Connection, name: str, *, actor: str, ip: str = "") -> None: ...
async def list_backends(db: aiosqlite.Connection, file_backends: tuple = ()) -> list[BackendRow]: ...
async def get_settings(db: aiosqlite.Connection) -> dict[str, str]: ...
async def set_setting(db: aiosqlite.Connection, key: str, value_json: str, *, actor: str, ip: str = "") -> None: ...
async def add_admin(db: aiosqlite.Connection, name: str, password: str, role: str = "admin") -> None: ...
async def audit(
    db: aiosqlite.Connection, actor: str, action: str, target: str = "", detail: str = "", ip: str = ""
) -> None: ...
