"""The immutable picture of configuration the hot path works from (pure data, no I/O).

The proxy builds one Snapshot from config.toml plus the database, and swaps a single reference
when the database's config_version changes. Nothing in a request ever awaits SQLite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from fortress.config import DEFAULT_PROVIDER_CAPABILITIES, Config, LimitsConfig, RoutingConfig, SecurityConfig
from fortress.pipeline.windows import parse_rate

Rate = tuple[int, int]  # (count, window seconds)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    user: str
    secret_hash: str
    state: str = "active"  # active | disabled | revoked
    scope: str = "user"  # user | search (user + web search) | admin
    models: tuple[str, ...] = ()  # glob allow-list; empty = all
    rate: Rate | None = None
    tokens: Rate | None = None
    max_concurrent: int | None = None
    max_num_ctx: int | None = None
    max_num_predict: int | None = None
    max_keep_alive_s: int | None = None
    expires_at: float | None = None
    label: str = ""
    auto_models: tuple[str, ...] = ()  # globs narrowing what model "auto" may pick; empty = no narrowing


@dataclass(frozen=True, slots=True)
class BackendRecord:
    name: str
    url: str
    type: str = "ollama"
    weight: int = 1
    models: tuple[str, ...] = ()  # served models (openai type)
    credential: str = ""  # decrypted; never logged, never shown
    max_concurrent: int = 0
    ca_bundle: str = ""
    source: str = "file"  # file (read-only in the admin) | db
    capabilities: tuple[str, ...] = DEFAULT_PROVIDER_CAPABILITIES  # openai type: what its models can do

    def __repr__(self) -> str:  # keep the credential out of any repr that reaches a log
        return f"BackendRecord(name={self.name!r}, url={self.url!r}, type={self.type!r})"


# Settings the admin may override; the database value (JSON) wins over config.toml.
OVERRIDABLE: dict[str, tuple[str, str]] = {
    **{f"security.{f.name}": ("security", f.name) for f in fields(SecurityConfig)},
    **{f"limits.{f.name}": ("limits", f.name) for f in fields(LimitsConfig)},
    **{f"routing.{f.name}": ("routing", f.name) for f in fields(RoutingConfig)},
}


@dataclass(frozen=True)
class Policy:
    """Effective policy: config.toml's [security], [limits], [routing] overridden by settings rows."""

    security: SecurityConfig
    limits: LimitsConfig
    routing: RoutingConfig
    default_rate: Rate | None = None
    default_tokens: Rate | None = None

    @classmethod
    def build(cls, cfg: Config, settings: dict[str, str]) -> Policy:
        parts: dict[str, dict[str, Any]] = {"security": {}, "limits": {}, "routing": {}}
        for key, raw in settings.items():
            if key not in OVERRIDABLE:
                continue
            section, name = OVERRIDABLE[key]
            value = json.loads(raw)
            parts[section][name] = tuple(value) if isinstance(value, list) else value
        security = _replace(cfg.security, parts["security"])
        limits = _replace(cfg.limits, parts["limits"])
        routing = _replace(cfg.routing, parts["routing"])
        return cls(
            security=security,
            limits=limits,
            routing=routing,
            default_rate=parse_rate(limits.rate) if limits.rate else None,
            default_tokens=parse_rate(limits.tokens) if limits.tokens else None,
        )


def _replace(obj: Any, values: dict[str, Any]) -> Any:
    from dataclasses import replace

    try:
        return replace(obj, **values) if values else obj
    except TypeError:  # a stale or foreign settings row: ignore rather than break the proxy
        return obj


@dataclass(frozen=True)
class Snapshot:
    version: int
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    backends: tuple[BackendRecord, ...] = ()
    policy: Policy | None = None
    trust: dict[str, tuple[str, float]] = field(default_factory=dict)  # IP trust: ip -> (key id, expires at)
