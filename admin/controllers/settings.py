"""Policy settings and the TLS certificate (both applied live through the database), admin accounts,
and the signed-in account's own theme."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.response import Response, Template

from admin import certstore, queries, themes, tlsinfo
from admin.web import cfg, db, form, ip, me, page, see_other
from fortress.config import Config
from fortress.pipeline.cors import check_origin
from fortress.proxy.tls import SETTING, LiveTls, TlsFiles, effective_files
from fortress.state import repo
from fortress.state.snapshot import Policy


@dataclass(frozen=True)
class Field:
    key: str  # settings key, e.g. security.ip_deny
    label: str
    kind: str  # lines | text | int | float
    help: str = ""


FIELDS = (
    Field(
        "security.blocked_endpoints",
        "Blocked endpoints (one path per line, * at the end matches a prefix)",
        "lines",
    ),
    Field(
        "security.ip_allow", "IP allow list (CIDRs, one per line; empty allows everyone not denied)", "lines"
    ),
    Field("security.ip_deny", "IP deny list (CIDRs, one per line)", "lines"),
    Field("security.allowed_registries", "Registries models may be pulled from (one host per line)", "lines"),
    Field(
        "security.cors_origins",
        "Browser origins allowed to call the proxy (one per line: scheme://host[:port], or *)",
        "lines",
    ),
    Field(
        "security.ip_trust_ttl_s", "IP trust sessions: seconds POST /auth trusts an address (0 = off)", "int"
    ),
    Field("limits.rate", "Default request limit per key (N/WINDOW, e.g. 600/1m; empty = unlimited)", "text"),
    Field("limits.tokens", "Default token limit per key (N/WINDOW; empty = unlimited)", "text"),
    Field("limits.max_concurrent", "Default max concurrent requests per key (0 = unlimited)", "int"),
    Field("routing.retries", "Retries before the first byte", "int"),
    Field("routing.backoff_base_ms", "Retry backoff base (ms)", "float"),
    Field("routing.health_interval_s", "Health check interval (s)", "float"),
    Field("routing.inventory_interval_s", "Model inventory refresh interval (s)", "float"),
    Field("routing.connect_timeout_s", "Backend connect timeout (s)", "float"),
    Field("routing.first_byte_timeout_s", "Backend first-byte timeout (s)", "float"),
)


def current_values(config: Config, settings: dict[str, str]) -> dict[str, object]:
    policy = Policy.build(config, settings)
    out: dict[str, object] = {}
    for f in FIELDS:
        section, name = f.key.split(".")
        out[f.key] = getattr(getattr(policy, section), name)
    return out


def parse_field(f: Field, text: str) -> object:
    """Form text -> the JSON value stored for this setting; ValueError names the field."""
    if f.kind == "lines":
        items = [line.strip() for line in text.splitlines() if line.strip()]
        for item in items:
            if f.key.startswith("security.ip_"):
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{f.key}: {item!r} is not an IP address or CIDR") from None
            if f.key == "security.blocked_endpoints" and not item.startswith("/"):
                raise ValueError(f"{f.key}: {item!r} must start with /")
            if f.key == "security.cors_origins" and (problem := check_origin(item)):
                raise ValueError(f"{f.key}: {problem}")
        return items
    if f.kind == "int":
        try:
            return int(text or 0)
        except ValueError:
            raise ValueError(f"{f.key}: must be a whole number") from None
    if f.kind == "float":
        try:
            return float(text or 0)
        except ValueError:
            raise ValueError(f"{f.key}: must be a number") from None
    return text


class SettingsController(Controller):
    @get("/settings")
    async def settings(self, request: Request) -> Template:
        return await _settings_page(request)

    @post("/settings")
    async def save(self, request: Request) -> Template | Response:
        data = await form(request)
        values = current_values(cfg(request), await repo.get_settings(db(request)))
        changes: list[tuple[str, object]] = []
        try:
            for f in FIELDS:
                if f.key in data:
                    new = parse_field(f, data[f.key])
                    old = list(values[f.key]) if isinstance(values[f.key], tuple) else values[f.key]
                    if new != old:
                        changes.append((f.key, new))
            for key, value in changes:
                repo.check_setting(key, json.dumps(value))
        except ValueError as exc:  # RepoError is a ValueError too
            return await _settings_page(request, error=str(exc), status_code=400)
        for key, value in changes:
            await repo.set_setting(
                db(request), key, json.dumps(value), actor=me(request).name, ip=ip(request)
            )
        notice = (
            f"Saved {len(changes)} change(s); the running proxy applies them within a second, "
            "no restart needed."
            if changes
            else "Nothing changed."
        )
        return await _settings_page(request, notice=notice)

    @post("/settings/reset")
    async def reset(self, request: Request) -> Response:
        for key in await repo.get_settings(db(request)):
            if key != SETTING:  # the certificate has its own reset
                await repo.delete_setting(db(request), key, actor=me(request).name, ip=ip(request))
        return see_other(request, "/settings")

    @post("/settings/tls")
    async def tls(self, request: Request) -> Template:
        """Check an uploaded or named pair and, when it is usable, put it in force (no restart)."""
        raw = await request.form()
        cert_file, key_file = raw.get("cert_file"), raw.get("key_file")
        cert_path, key_path = str(raw.get("cert_path", "")).strip(), str(raw.get("key_path", "")).strip()
        try:
            if isinstance(cert_file, UploadFile) and isinstance(key_file, UploadFile) and cert_file.filename:
                cert_pem, key_pem = await cert_file.read(), await key_file.read()
                info = tlsinfo.check_pair(cert_pem, key_pem)
                files = certstore.store_upload(cfg(request), cert_pem, key_pem)
            elif cert_path and key_path:
                if not (Path(cert_path).is_absolute() and Path(key_path).is_absolute()):
                    raise ValueError("give absolute paths (the proxy may run from another directory)")
                info = tlsinfo.check_pair(Path(cert_path).read_bytes(), Path(key_path).read_bytes())
                files = TlsFiles(cert_path, key_path)
            else:
                raise ValueError("upload both a certificate and a key, or give both paths")
        except (ValueError, OSError) as exc:
            return await _settings_page(request, tls_error=str(exc), status_code=400)
        detail = f"sha256 {info.fingerprint}, expires {info.not_after:%Y-%m-%d}"
        await certstore.apply(db(request), files, actor=me(request).name, ip=ip(request), detail=detail)
        await _refresh_own_listener(request)
        return await _settings_page(request, tls_applied=info)

    @post("/settings/tls/reset")
    async def tls_reset(self, request: Request) -> Response:
        if await certstore.clear(db(request), actor=me(request).name, ip=ip(request)):
            await _refresh_own_listener(request)
        return see_other(request, "/settings#tls")

    @get("/settings/tls/status")
    async def tls_status(self, request: Request) -> Template:
        """The status line alone, for the page to ask again until the proxy has caught up."""
        return page(request, "_tls_status.html", tls=await _tls_state(request))

    @post("/settings/theme")
    async def theme(self, request: Request) -> Template | Response:
        """Any account, viewers too, picks its own theme; it follows the account to every browser."""
        name = (await form(request)).get("theme", "")
        if name not in themes.NAMES:
            return await _settings_page(
                request, theme_error=f"There is no theme named {name!r}.", status_code=400
            )
        await queries.set_theme(db(request), me(request).name, name)
        return see_other(request, "/settings#theme")

    @post("/settings/admins")
    async def add_admin(self, request: Request) -> Template | Response:
        data = await form(request)
        try:
            await repo.add_admin(
                db(request),
                data.get("username", ""),
                data.get("new_password", ""),
                data.get("role", "viewer"),
                actor=me(request).name,
                ip=ip(request),
            )
        except repo.RepoError as exc:
            return await _settings_page(request, admin_error=str(exc), status_code=400)
        return see_other(request, "/settings#admins")

    @post("/settings/admins/{name:str}/remove")
    async def remove_admin(self, request: Request, name: str) -> Template | Response:
        if name == me(request).name:
            return await _settings_page(
                request, admin_error="You cannot remove your own account.", status_code=400
            )
        try:
            await queries.remove_admin(db(request), name, actor=me(request).name, ip=ip(request))
        except repo.RepoError as exc:
            return await _settings_page(request, admin_error=str(exc), status_code=400)
        return see_other(request, "/settings#admins")


@dataclass(frozen=True)
class TlsState:
    files: TlsFiles | None  # the pair in force
    source: str  # "settings" (chosen here) | "config.toml" | ""
    info: tlsinfo.CertInfo | None
    problem: str  # why the pair in force is unusable, if it is
    note: str  # what the running proxy does with it
    settled: bool


async def _tls_state(request: Request) -> TlsState:
    config = cfg(request)
    settings = await repo.get_settings(db(request))
    files = effective_files(config, settings)
    info, problem = None, ""
    if files:
        try:
            info = tlsinfo.check_pair(Path(files.cert).read_bytes(), Path(files.key).read_bytes())
        except (ValueError, OSError) as exc:
            problem = str(exc)
    served = [d.get("tls", "") for d in (await queries.proxy_live(db(request))).detail]
    if problem:
        note, settled = "The running proxy keeps the certificate it loaded last; replace this pair.", True
    else:
        note, settled = tlsinfo.proxy_note(info.fingerprint if info else None, served)
    source = "settings" if SETTING in settings else "config.toml" if files else ""
    return TlsState(files, source, info, problem, note, settled)


async def _refresh_own_listener(request: Request) -> None:
    """When the admin serves HTTPS itself, it switches to the pair in force at once too."""
    live: LiveTls | None = request.app.state.live_tls
    if live is not None:
        live.select(cfg(request), await repo.get_settings(db(request)))
        live.refresh()


async def _settings_page(request: Request, **extra: object) -> Template:
    config = cfg(request)
    overrides = {k: v for k, v in (await repo.get_settings(db(request))).items() if k != SETTING}
    return page(
        request,
        "settings.html",
        fields=FIELDS,
        values=current_values(config, overrides),
        overrides=overrides,
        config=config,
        tls=await _tls_state(request),
        admin_tls=request.app.state.live_tls is not None,
        admins=await queries.list_admins(db(request)),
        themes=themes.THEMES,
        **extra,  # type: ignore[arg-type]
    )
