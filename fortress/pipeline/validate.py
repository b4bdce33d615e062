"""Ollama-specific request validation and clamping (DESIGN §2 stage 8), pure functions on parsed JSON.

Contract: every check answers None when the request may go on, or a `Reject(status, message)` the chain
turns into an error in the route's shape; nothing here raises on client input. 400 means the request is
malformed (bad name, bad digest, legacy field); 403 means it is well formed but refused by policy
(registry not allow-listed, cloud model, remote host). These checks apply to admin-scope keys
too: they are what stands between a client and Ollama's known CVEs (OLLAMA_API.md §4).

- Model names follow Ollama's grammar `[host/][namespace/]model[:tag]` (types/model/name.go) with the
  stricter rules of DESIGN §2.8: no `..`, `\\`, `://`; only the host may carry `:port`.
- Names that make Ollama pull (pull, push, copy destination, create.from) must resolve to an allow-listed
  registry; a name without a host resolves to `registry.ollama.ai`, Ollama's default. `insecure: true`
  on pull and push is then removed by `drop_insecure` (DESIGN §6.2): front ends such as Open WebUI always
  send it, and an allow-listed registry is reached over TLS anyway.
- `:cloud` / `-cloud` names (Ollama then spends the owner's ollama.com account) are refused unless allowed.
- Digests must be `sha256:` and 64 lower-case hex digits, stricter than Ollama and what clients send.
- `clamp_options` enforces a key's caps by rewriting the body, so an omitted `num_predict` (unlimited for
  Ollama) or a negative `keep_alive` (forever) cannot dodge them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any
from urllib.parse import unquote

DEFAULT_REGISTRY = "registry.ollama.ai"


@dataclass(frozen=True, slots=True)
class Reject:
    """A refusal: the HTTP status and a message naming the cause (never a secret)."""

    status: int
    message: str


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,349}(?::[0-9]{1,5})?")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")  # model and tag
_MAX_NAME = 350 + 6 + 3 * 81  # host:port/namespace/model:tag

_BAD_DIGEST = Reject(400, "invalid digest format: expected sha256: and 64 lower-case hex digits")
_INSECURE = Reject(400, "'insecure' must be true or false")
_LEGACY_CREATE = Reject(400, "the legacy 'path' and 'modelfile' fields of /api/create are not accepted")
_MODEL_REQUIRED = Reject(400, "model is required")
_NOT_OBJECT = Reject(400, "request body must be a JSON object")


def _show(text: str) -> str:
    """A client string made safe and short for an error message."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def check_digest(text: object) -> Reject | None:
    """`sha256:<64 lower-case hex>` or a 400."""
    if isinstance(text, str) and _DIGEST.fullmatch(text):
        return None
    return _BAD_DIGEST


def blob_digest_from_path(raw_path: str) -> str | Reject:
    """The digest of `/api/blobs/<digest>` (or of the part after that prefix), percent-decoded and checked.

    Traversal shapes (`/`, `..`, `\\`, also once decoded) are refused before the digest grammar, so the
    message says what was wrong.
    """
    part = raw_path.partition("?")[0]
    if part.startswith("/api/blobs/"):
        part = part[len("/api/blobs/") :]
    decoded = unquote(part) if "%" in part else part  # bad UTF-8 becomes U+FFFD and fails the grammar
    if "/" in decoded or ".." in decoded or "\\" in decoded:
        return Reject(400, "invalid digest: path separators and '..' are not allowed")
    return check_digest(decoded) or decoded


def _split_name(name: str) -> tuple[str | None, str | None, str, str | None] | None:
    """Ollama's ParseName: (host, namespace, model, tag); None for more than three '/' parts."""
    tag = None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
    parts = name.split("/")
    if len(parts) == 1:
        return None, None, parts[0], tag
    if len(parts) == 2:
        return None, parts[0], parts[1], tag
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], tag
    return None


def is_cloud_model(name: str) -> bool:
    """`x:cloud`, `x:120b-cloud` (and, conservatively, an untagged `x-cloud`)."""
    return name.lower().endswith((":cloud", "-cloud"))


@lru_cache(maxsize=4096)
def _check_name(name: str, registries: tuple[str, ...] | None, allow_cloud: bool) -> Reject | None:
    if "://" in name:
        return Reject(400, f"invalid model name {_show(name)}: a scheme (://) is not allowed")
    if ".." in name or "\\" in name:
        return Reject(400, f"invalid model name {_show(name)}: '..' and '\\' are not allowed")
    parts = _split_name(name)
    if parts is None:
        return Reject(400, f"invalid model name {_show(name)}: expected [host/][namespace/]model[:tag]")
    host, namespace, model, tag = parts
    if (
        (host is not None and not _HOST.fullmatch(host))
        or (namespace is not None and not _NAMESPACE.fullmatch(namespace))
        or not _PART.fullmatch(model)
        or (tag is not None and not _PART.fullmatch(tag))
    ):
        return Reject(400, f"invalid model name {_show(name)}: expected [host/][namespace/]model[:tag]")
    if not allow_cloud and is_cloud_model(name):
        return Reject(403, f"forbidden: cloud model {_show(name)} is not allowed")
    if registries is not None and (host or DEFAULT_REGISTRY).lower() not in registries:
        return Reject(403, f"forbidden: registry {_show(host or DEFAULT_REGISTRY)} is not allow-listed")
    return None


def check_model_name(
    name: object, *, allowed_registries: Collection[str] | None, allow_cloud: bool
) -> Reject | None:
    """Grammar and cloud check; with `allowed_registries` also the registry the name pulls from."""
    return _name(name, _lowered(allowed_registries), allow_cloud)


def _name(name: object, registries: tuple[str, ...] | None, allow_cloud: bool) -> Reject | None:
    """check_model_name with the registries already lower-cased (_lowered)."""
    if not isinstance(name, str):
        return Reject(400, "model name must be a string")
    if len(name) > _MAX_NAME:  # also keeps huge strings out of the memo
        return Reject(400, f"invalid model name {_show(name)}: too long")
    return _check_name(name, registries, allow_cloud)


def _lowered(registries: Collection[str] | None) -> tuple[str, ...] | None:
    return None if registries is None else _lower(tuple(registries))


@lru_cache(maxsize=64)
def _lower(registries: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(r.lower() for r in registries)


def _check_names(
    registries: tuple[str, ...] | None, allow_cloud: bool, body: dict[str, Any]
) -> Reject | None:
    """The `model` and `name` fields a route reads (Ollama takes the first non-empty): at least one, and
    every one given valid (`registries` lower-cased; None: no registry check). /api/show's and
    /api/delete's whole check."""
    model, name = body.get("model"), body.get("name")
    if name is None or name == "":  # the usual body names only its model
        return _MODEL_REQUIRED if model is None or model == "" else _name(model, registries, allow_cloud)
    if model is not None and model != "":
        reject = _name(model, registries, allow_cloud)
        if reject is not None:
            return reject
    return _name(name, registries, allow_cloud)


def _is_safe_relative_path(path: object) -> bool:
    """Go's fs.ValidPath, plus no backslash or NUL: what /api/create accepts as a `files` key."""
    if not isinstance(path, str) or not path or len(path) > 1024 or "\\" in path or "\x00" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _check_digest_map(body: dict[str, Any], field: str) -> Reject | None:
    files = body.get(field)
    if files is None:
        return None
    if not isinstance(files, dict):
        return Reject(400, f"'{field}' must be an object of relative path to digest")
    for path, digest in files.items():
        if not _is_safe_relative_path(path):
            return Reject(400, f"invalid '{field}' entry {_show(path)}: file path must be relative")
        if check_digest(digest) is not None:
            return Reject(400, f"invalid digest for '{field}' entry {_show(path)}: {_BAD_DIGEST.message}")
    return None


def _pull_push(registries: Collection[str], allow_cloud: bool, body: dict[str, Any]) -> Reject | None:
    insecure = body.get("insecure")
    if insecure is not None and not isinstance(insecure, bool):
        return _INSECURE
    return _check_names(_lowered(registries), allow_cloud, body)


def drop_insecure(path: str, body: dict[str, Any]) -> bool:
    """Remove `insecure` from a validated pull or push (its registry is allow-listed); True if removed."""
    if path in ("/api/pull", "/api/push") and body.get("insecure") is True:
        del body["insecure"]
        return True
    return False


def _copy(registries: Collection[str], allow_cloud: bool, body: dict[str, Any]) -> Reject | None:
    source, destination = body.get("source"), body.get("destination")
    if source in (None, "") or destination in (None, ""):
        return Reject(400, "source and destination are required")
    return check_model_name(source, allowed_registries=None, allow_cloud=allow_cloud) or check_model_name(
        destination, allowed_registries=registries, allow_cloud=allow_cloud
    )


def _create(registries: Collection[str], allow_cloud: bool, body: dict[str, Any]) -> Reject | None:
    if "path" in body or "modelfile" in body:
        return _LEGACY_CREATE
    if body.get("remote_host") not in (None, "") and not allow_cloud:
        return Reject(403, "forbidden: models that forward to a remote host are not allowed")
    reject = _check_names(None, allow_cloud, body)
    if reject is not None:
        return reject
    source = body.get("from")
    if source not in (None, ""):
        # `from` pulls implicitly when the model is missing: it is a pull in disguise
        reject = check_model_name(source, allowed_registries=registries, allow_cloud=allow_cloud)
        if reject is not None:
            return reject
    return (
        _check_digest_map(body, "files")
        or _check_digest_map(body, "adapters")
        or _check_digest_map(body, "draft_files")
    )


def _inference(_registries: None, allow_cloud: bool, body: dict[str, Any]) -> Reject | None:
    model = body.get("model")
    if model is None or model == "":
        return _MODEL_REQUIRED
    return _name(model, None, allow_cloud)


# A route's checks: (allowed registries, allow_cloud, body) -> the refusal or None. The allowed registries
# go to the routes that pull (_PULLS); the others get None.
_VALIDATORS: dict[str, Callable[[Any, bool, dict[str, Any]], Reject | None]] = {
    "/api/pull": _pull_push,
    "/api/push": _pull_push,
    "/api/copy": _copy,
    "/api/create": _create,
    "/api/delete": _check_names,
    "/api/show": _check_names,
    "/api/generate": _inference,
    "/api/chat": _inference,
    "/api/embed": _inference,
    "/api/embeddings": _inference,
}
_PULLS = frozenset(("/api/pull", "/api/push", "/api/copy", "/api/create"))
BodyCheck = Callable[[dict[str, Any]], "Reject | None"]


def _bound(path: str, registries: Collection[str], allow_cloud: bool) -> BodyCheck | None:
    """The checks of `path` with the settings bound, or None when it has none."""
    check = _VALIDATORS.get(path)
    if check is None:
        if not path.startswith("/v1/"):
            return None
        check = _inference
    return partial(check, registries if path in _PULLS else None, allow_cloud)  # type: ignore[arg-type]


def validate_body(
    path: str, body: object, *, allowed_registries: Collection[str], allow_cloud: bool
) -> Reject | None:
    """Stage 8 for the JSON body of `path` (the route path, no query); other paths pass."""
    if not isinstance(body, dict):
        return _NOT_OBJECT
    check = _bound(path, allowed_registries, allow_cloud)
    return None if check is None else check(body)


def body_checks(
    paths: Iterable[str], *, allowed_registries: Collection[str], allow_cloud: bool
) -> dict[str, BodyCheck]:
    """validate_body for a parsed body (a dict) of each of `paths` that has checks, with a snapshot's
    settings bound: built once per snapshot, so the body stage makes one call per request."""
    checks = {path: _bound(path, allowed_registries, allow_cloud) for path in paths}
    return {path: check for path, check in checks.items() if check is not None}


# ---- clamping -------------------------------------------------------------------------------------

_GO_DURATION = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_GENERATES = frozenset(("/api/generate", "/api/chat"))
_OPENAI_GENERATES = frozenset(("/v1/chat/completions", "/v1/completions"))


def parse_go_duration(text: str) -> float | None:
    """Go's time.ParseDuration ("5m", "1h30m", "-1.5h", "0") in seconds; None when Go would refuse it."""
    sign = -1.0 if text.startswith("-") else 1.0
    rest = text[1:] if text[:1] in "+-" else text
    if rest == "0":
        return 0.0
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _GO_DURATION.match(rest, pos)
        if match is None or match.group(1) in ("", "."):
            return None
        total += float(match.group(1)) * _GO_UNITS[match.group(2)]
        pos = match.end()
    return sign * total if rest else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _keep_alive_s(value: object) -> float | None:
    """Seconds as Ollama reads keep_alive (number of seconds or Go duration); negative = forever."""
    seconds = parse_go_duration(value) if isinstance(value, str) else _number(value)
    if seconds is None or math.isnan(seconds):
        return None
    return math.inf if seconds < 0 else seconds


def _clamp_count(holder: dict[str, Any], field: str, cap: int, insert: bool) -> bool:
    """Cap a token count; negative (Ollama: unlimited) and non-finite values become the cap."""
    if field not in holder:
        if insert:
            holder[field] = cap
        return insert
    value = _number(holder[field])
    if value is None or 0 <= value <= cap:
        return False  # wrong types are left for the backend to refuse
    holder[field] = cap
    return True


def clamp_options(
    body: dict[str, Any],
    *,
    path: str,
    max_num_ctx: int | None,
    max_num_predict: int | None,
    max_keep_alive_s: int | None,
) -> bool:
    """Apply a key's caps to the body of route `path` in place; True when the body changed.

    Native routes: `options.num_ctx`, `options.num_predict` (added when missing on generate and chat,
    since Ollama's default is unlimited) and `keep_alive`. OpenAI routes: `max_tokens` and
    `max_completion_tokens` (`max_tokens` added on chat and completions when both are missing).
    An absent `num_ctx` or `keep_alive` is left alone: the backend's own default applies.
    """
    changed = False
    if path.startswith("/v1/"):
        if max_num_predict is not None:
            present = "max_tokens" in body or "max_completion_tokens" in body
            insert = not present and path in _OPENAI_GENERATES
            changed |= _clamp_count(body, "max_tokens", max_num_predict, insert)
            if "max_completion_tokens" in body:
                changed |= _clamp_count(body, "max_completion_tokens", max_num_predict, False)
    else:
        options = body.get("options")
        if options is None and max_num_predict is not None and path in _GENERATES:
            options = body["options"] = {}
            changed = True
        if isinstance(options, dict):
            if max_num_ctx is not None and "num_ctx" in options:
                value = _number(options["num_ctx"])
                if value is not None and not 0 < value <= max_num_ctx:
                    options["num_ctx"] = max_num_ctx
                    changed = True
            if max_num_predict is not None:
                changed |= _clamp_count(options, "num_predict", max_num_predict, path in _GENERATES)
    if max_keep_alive_s is not None and body.get("keep_alive") is not None:
        seconds = _keep_alive_s(body["keep_alive"])
        if seconds is None or seconds > max_keep_alive_s:
            body["keep_alive"] = max_keep_alive_s
            changed = True
    return changed


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")


def looks_like_zip(first_bytes: bytes) -> bool:
    """True for a zip archive's signatures (CVE-2024-45436 Zip Slip via blobs); needs the first 4 bytes."""
    return first_bytes[:4] in _ZIP_MAGIC
