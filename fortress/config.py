"""Process settings from config.toml: one frozen object, validated at start, no I/O at import.

Runtime entities (users, keys, database-added backends, policy overrides) live in SQLite;
this file only holds what a process needs before it can open the database.
Unknown keys and bad values raise ConfigError naming the key, so a typo fails loudly.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "./config.toml"
DEFAULT_BLOCKED = (
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
    "/api/blobs/*",
)
DEFAULT_PROVIDER_CAPABILITIES = ("completion",)  # what an openai-type backend's models are assumed to do


class ConfigError(ValueError):
    """A bad or unknown setting; the message names the key."""


@dataclass(frozen=True)
class ProxyConfig:
    listen: str = "127.0.0.1:8080"
    workers: int = 1
    tls_cert: str = ""
    tls_key: str = ""
    max_body_bytes: int = 64 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024**3  # model files uploaded to /api/blobs stream through, up to this
    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 75.0
    drain_timeout_s: float = 30.0
    max_connections_per_ip: int = 0  # 0 = unlimited
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class AdminConfig:
    listen: str = "127.0.0.1:8081"
    session_lifetime_s: int = 8 * 3600
    session_secret_file: str = ""  # default: <database dir>/admin-session.secret
    head_timeout_s: float = 10.0  # a request head must arrive within this (slowloris guard)
    body_timeout_s: float = 60.0  # and its body within this once the head is in
    max_connections: int = 1000  # at the cap, the longest-idle connection makes room (admin/server.py)


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "./data/fortress.db"


@dataclass(frozen=True)
class BackendConfig:
    name: str
    url: str
    type: str = "ollama"
    weight: int = 1
    credential_env: str = ""  # name of an environment variable holding the credential
    models: tuple[str, ...] = ()
    max_concurrent: int = 0
    ca_bundle: str = ""
    capabilities: tuple[str, ...] = DEFAULT_PROVIDER_CAPABILITIES  # openai type: what its models can do


@dataclass(frozen=True)
class SecurityConfig:
    blocked_endpoints: tuple[str, ...] = DEFAULT_BLOCKED
    ip_allow: tuple[str, ...] = ()
    ip_deny: tuple[str, ...] = ()
    key_in_query: bool = False  # ?api_key=<key> (removed before forwarding)
    key_in_body: bool = False  # the JSON body's "api_key" (removed before forwarding)
    ip_trust_ttl_s: int = 0  # POST /auth trusts the caller's address for this long; 0 = off
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the proxy (exact, or "*")
    allowed_registries: tuple[str, ...] = ("registry.ollama.ai",)
    allow_cloud_models: bool = False
    auth_fail_limit: int = 50
    auth_fail_window_s: float = 60.0
    auth_lockout_s: float = 300.0
    secrets_key_file: str = ""  # default: <database dir>/secrets.key


@dataclass(frozen=True)
class LimitsConfig:
    rate: str = ""  # default per-key request rate, e.g. "600/1m"; empty = unlimited
    tokens: str = ""
    max_concurrent: int = 0


@dataclass(frozen=True)
class RoutingConfig:
    retries: int = 2
    backoff_base_ms: float = 50.0
    retry_budget_ms: float = 2000.0
    connect_timeout_s: float = 5.0
    first_byte_timeout_s: float = 300.0
    idle_timeout_s: float = 120.0
    inventory_interval_s: float = 10.0
    health_interval_s: float = 5.0
    queue_timeout_s: float = 30.0
    queue_limit: int = 256
    breaker_threshold: int = 3
    breaker_cool_down_s: float = 5.0  # <= health_interval_s: a recovered backend is back within two intervals
    pool_max_idle: int = 64
    auto_models: tuple[str, ...] = ()  # model "auto": globs by preference; empty = all, smallest first


@dataclass(frozen=True)
class ClusterConfig:
    """Many gateway nodes on one shared state through Redis (fortress.cluster); off while redis_url = ""."""

    redis_url: str = ""
    role: str = "control"  # control: holds the database, runs the admin, publishes | node: config from Redis
    node_name: str = ""  # "" = the host name; names this node in the admin and in Redis
    snapshot_poll_s: float = 0.5  # a node also polls the snapshot version, so a missed notice is caught up
    usage_stream_maxlen: int = 100_000  # batches the usage stream keeps for a stopped control node

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)

    @property
    def name(self) -> str:
        import socket

        return self.node_name or socket.gethostname()


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LoggingConfig:
    level: str = "info"  # diagnostic logs (stderr): debug | info | warning | error
    format: str = "text"  # text | json (one JSON object per line)
    access_log: str = "off"  # off | json: one JSON line per request, written by the usage writer
    access_log_path: str = ""  # "" = stdout; else a file, appended to (relative to the config file)


@dataclass(frozen=True)
class SearchConfig:
    """Web search and page fetch (/api/web_search, /api/web_fetch): off until a source is configured."""

    searxng_url: str = ""  # a SearXNG instance with the JSON format enabled, e.g. "http://127.0.0.1:8888"
    ollama_key_env: str = ""  # environment variable holding an ollama.com API key: the hosted fallback
    ollama_url: str = "https://ollama.com"  # where the hosted web search lives
    fetch_allow: tuple[str, ...] = ()  # CIDRs web_fetch may reach although private, loopback...
    max_fetch_bytes: int = 2 * 1024 * 1024  # web_fetch reads at most this much of a page
    timeout_s: float = 10.0  # per search source (SearXNG, then ollama.com) and per fetch, redirects included

    @property
    def enabled(self) -> bool:
        return bool(self.searxng_url or self.ollama_key_env)


@dataclass(frozen=True)
class MetricsConfig:
    """GET /metrics on the proxy port (Prometheus text): admin-scope keys, and `allow` without a key."""

    enabled: bool = True
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # CIDRs; [] = admin-scope keys only


@dataclass(frozen=True)
class Config:
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    backends: tuple[BackendConfig, ...] = ()
    security: SecurityConfig = field(default_factory=SecurityConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    source: str = ""  # the file this came from, "" for built-in defaults

    @property
    def data_dir(self) -> Path:
        return Path(self.database.path).resolve().parent


_SECTIONS: dict[str, type] = {
    "proxy": ProxyConfig,
    "admin": AdminConfig,
    "database": DatabaseConfig,
    "security": SecurityConfig,
    "limits": LimitsConfig,
    "routing": RoutingConfig,
    "cluster": ClusterConfig,
    "search": SearchConfig,
    "metrics": MetricsConfig,
    "logging": LoggingConfig,
}


def _coerce(where: str, expected: Any, value: Any) -> Any:
    """Check one value against its field type; tuples accept TOML arrays."""
    if expected in ("tuple[str, ...]",):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if expected == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative integer")
        return value
    if expected == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: expected a non-negative number")
        return float(value)
    if expected == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string")
        return value
    raise ConfigError(f"{where}: unsupported type {expected}")  # pragma: no cover


def _build(cls: type, where: str, table: Any) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields:
            raise ConfigError(f"unknown key {where}.{key}")
        values[key] = _coerce(f"{where}.{key}", fields[key].type, value)
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING]
        raise ConfigError(f"[{where}] is missing {', '.join(missing)}") from exc


def _check(cfg: Config) -> Config:
    from fortress.addr import parse_listen  # local imports: config has no import-time deps
    from fortress.routing.capabilities import check_names

    parse_listen(cfg.proxy.listen, "proxy.listen")
    parse_listen(cfg.admin.listen, "admin.listen")
    if cfg.proxy.workers < 1:
        raise ConfigError("proxy.workers: must be at least 1")
    if bool(cfg.proxy.tls_cert) != bool(cfg.proxy.tls_key):
        raise ConfigError("proxy.tls_cert and proxy.tls_key must be set together")
    if min(cfg.admin.head_timeout_s, cfg.admin.body_timeout_s, cfg.admin.max_connections) <= 0:
        raise ConfigError("admin.head_timeout_s, body_timeout_s and max_connections: must be positive")
    if cfg.proxy.max_header_bytes < 1024:
        raise ConfigError("proxy.max_header_bytes: must be at least 1024")
    from fortress.backends.kind import kind_names

    types = kind_names()
    names: set[str] = set()
    for i, b in enumerate(cfg.backends):
        where = f"backends[{i}]"
        if b.name in names:
            raise ConfigError(f"{where}.name: duplicate backend name {b.name!r}")
        names.add(b.name)
        if b.type not in types:
            raise ConfigError(f"{where}.type: must be one of {', '.join(repr(t) for t in types)}")
        if not b.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: must start with http:// or https://")
        try:
            check_names(b.capabilities, f"{where}.capabilities")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    for i, glob in enumerate(cfg.routing.auto_models):
        if not glob.strip():
            raise ConfigError(f"routing.auto_models[{i}]: empty pattern")
    _check_search(cfg.search)
    _check_cluster(cfg.cluster)
    _check_origins(cfg.security.cors_origins)
    _check_cidrs("metrics.allow", cfg.metrics.allow)
    _check_logging(cfg.logging)
    from fortress.pipeline.windows import parse_rate

    for key in ("rate", "tokens"):
        text = getattr(cfg.limits, key)
        if text:
            try:
                parse_rate(text)
            except ValueError as exc:
                raise ConfigError(f"limits.{key}: {exc}") from None
    return cfg


def _check_cidrs(where: str, entries: tuple[str, ...]) -> None:
    import ipaddress

    for i, cidr in enumerate(entries):
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(f"{where}[{i}]: not a CIDR: {cidr!r}") from None


_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _check_cluster(cluster: ClusterConfig) -> None:
    if cluster.redis_url and not cluster.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("cluster.redis_url: must start with redis://, rediss:// or unix://")
    if cluster.role not in ("control", "node"):
        raise ConfigError("cluster.role: must be 'control' or 'node'")
    if cluster.role == "node" and not cluster.redis_url:
        raise ConfigError("cluster.role: 'node' takes its configuration from Redis: set cluster.redis_url")
    if cluster.node_name and not _NODE_NAME.match(cluster.node_name):
        raise ConfigError("cluster.node_name: letters, digits, '.', '_' and '-', at most 63 characters")
    if not 0.05 <= cluster.snapshot_poll_s <= 60:
        raise ConfigError("cluster.snapshot_poll_s: must be between 0.05 and 60")
    if cluster.usage_stream_maxlen < 1000:
        raise ConfigError("cluster.usage_stream_maxlen: must be at least 1000")


def _check_origins(origins: tuple[str, ...]) -> None:
    from fortress.pipeline.cors import check_origin

    for i, origin in enumerate(origins):
        problem = check_origin(origin)
        if problem:
            raise ConfigError(f"security.cors_origins[{i}]: {problem}")


def _check_search(search: SearchConfig) -> None:
    for key in ("searxng_url", "ollama_url"):
        url = getattr(search, key)
        if url and not url.startswith(("http://", "https://")):
            raise ConfigError(f"search.{key}: must start with http:// or https://")
    _check_cidrs("search.fetch_allow", search.fetch_allow)
    if search.max_fetch_bytes < 1024:
        raise ConfigError("search.max_fetch_bytes: must be at least 1024")
    if search.timeout_s <= 0:
        raise ConfigError("search.timeout_s: must be positive")


def _check_logging(cfg: LoggingConfig) -> None:
    choices = {"level": LOG_LEVELS, "format": ("text", "json"), "access_log": ("off", "json")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"logging.{key}: must be one of {', '.join(allowed)}")


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """Old spellings still accepted: [proxy] log_level is [logging] level (which wins when both are set)."""
    proxy = data.get("proxy")
    if not isinstance(proxy, dict) or "log_level" not in proxy:
        return data
    proxy = dict(proxy)
    level = proxy.pop("log_level")
    logs = data.get("logging", {})
    if isinstance(logs, dict) and "level" not in logs:
        logs = {**logs, "level": level}
    return {**data, "proxy": proxy, "logging": logs}


def parse(data: dict[str, Any], source: str = "") -> Config:
    """Build a Config from a parsed TOML document."""
    data = _renamed(data)
    parts: dict[str, Any] = {}
    for key, table in data.items():
        if key == "backends":
            if not isinstance(table, list):
                raise ConfigError("[[backends]] must be an array of tables")
            parts["backends"] = tuple(_build(BackendConfig, f"backends[{i}]", t) for i, t in enumerate(table))
        elif key in _SECTIONS:
            parts[key] = _build(_SECTIONS[key], key, table)
        else:
            raise ConfigError(f"unknown section [{key}]")
    return _check(Config(source=source, **parts))


def config_path(explicit: str | None = None) -> str:
    return explicit or os.environ.get("FORTRESS_CONFIG") or DEFAULT_CONFIG


def load(path: str | None = None) -> Config:
    """Load the config file; a missing default file means built-in defaults."""
    chosen = config_path(path)
    p = Path(chosen)
    if not p.exists():
        if path or os.environ.get("FORTRESS_CONFIG"):
            raise ConfigError(f"config file not found: {chosen}")
        return _check(Config())
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: {exc}") from None
    cfg = parse(data, source=str(p))
    # a relative database path is relative to the config file, so commands work from any directory
    db = Path(cfg.database.path)
    if not db.is_absolute():
        cfg = dataclasses.replace(cfg, database=DatabaseConfig(str((p.parent / db).resolve())))
    access = Path(cfg.logging.access_log_path)
    if cfg.logging.access_log_path and not access.is_absolute():
        logs = dataclasses.replace(cfg.logging, access_log_path=str((p.parent / access).resolve()))
        cfg = dataclasses.replace(cfg, logging=logs)
    return cfg
