"""The configuration snapshot as bytes for Redis and back: versioned, compact, credentials sealed.

Layout: zlib-compressed JSON, `{"format": 1, "version", "published_at", "key_fields", "keys",
"backend_fields", "backends", "policy", "settings", "trust"}`. Records travel as rows under one list of field
names, so a 10,000-key snapshot does not repeat every name 10,000 times. Reading goes by name:
fields a newer control node added are ignored and fields it dropped take their defaults, so nodes
and control need not be upgraded in lockstep; `format` changes only when that stops being true.

Backend credentials are sealed with the control node's secrets key (fortress.state.secretbox, Fernet):
whoever can read Redis reads keys' hashes and policy, never a provider's API key. Every node needs a
copy of that key file. A credential a node cannot open is left empty and reported in `problems`, the
way fortress.state.load treats one in the database: the rest of the snapshot (a revoked key above
all) still applies. Decoding never creates a key file.

`decode(encode(s, settings, box), box)` gives back `s` and `settings` exactly: JSON keeps ints, floats
(shortest repr), booleans and None apart; every list becomes a tuple, which is what every sequence
in a Snapshot is.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from typing import Any, get_type_hints

from fortress.state.secretbox import SecretBox, SecretBoxError
from fortress.state.snapshot import BackendRecord, KeyRecord, Policy, Snapshot

FORMAT = 1
KEY_FIELDS = tuple(f.name for f in fields(KeyRecord))
BACKEND_FIELDS = tuple(f.name for f in fields(BackendRecord))
_CREDENTIAL = BACKEND_FIELDS.index("credential")
# Policy's fields that are config sections (dataclasses) travel as objects; the others as they are
_SECTIONS: dict[str, type] = {n: t for n, t in get_type_hints(Policy).items() if is_dataclass(t)}


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this node can read; the message says what to do."""


@dataclass(frozen=True)
class Decoded:
    snapshot: Snapshot
    settings: dict[str, str]  # the settings rows as stored (policy overrides, the TLS pair in force)
    published_at: float
    problems: tuple[str, ...] = ()  # credentials that could not be opened


def tag_of(version: int, blob: bytes) -> str:
    """What nodes compare: the config version, and a digest so a republication of other bytes is seen."""
    return f"{version}.{hashlib.blake2b(blob, digest_size=8).hexdigest()}"


def version_of(tag: str) -> int:
    return int(tag.partition(".")[0])


def encode(
    snapshot: Snapshot, settings: Mapping[str, str], box: SecretBox, now: float | None = None
) -> bytes:
    backends = []
    for b in snapshot.backends:
        row = [getattr(b, name) for name in BACKEND_FIELDS]
        if b.credential:
            row[_CREDENTIAL] = box.encrypt(b.credential).decode("ascii")
        backends.append(row)
    policy = snapshot.policy
    payload = {
        "format": FORMAT,
        "version": snapshot.version,
        "published_at": time.time() if now is None else now,
        "key_fields": KEY_FIELDS,
        "keys": [[getattr(k, name) for name in KEY_FIELDS] for k in snapshot.keys.values()],
        "backend_fields": BACKEND_FIELDS,
        "backends": backends,
        "policy": None if policy is None else _as_dict(policy),
        "settings": dict(settings),
        "trust": {ip: list(session) for ip, session in snapshot.trust.items()},  # IP trust sessions
    }
    return zlib.compress(json.dumps(payload, separators=(",", ":")).encode("ascii"))


def decode(blob: bytes, box: SecretBox) -> Decoded:
    try:
        payload = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise SnapshotError(f"not a Fortress snapshot ({exc})") from None
    if not isinstance(payload, dict) or "format" not in payload:
        raise SnapshotError("not a Fortress snapshot (no format field)")
    if payload["format"] != FORMAT:
        raise SnapshotError(
            f"snapshot format {payload['format']!r}, this node reads format {FORMAT}: "
            "run the same Fortress version on the control node and on every node"
        )
    try:
        keys = {}
        for row in payload["keys"]:
            k = _record(KeyRecord, payload["key_fields"], row)
            keys[k.id] = k
        problems: list[str] = []
        backends = tuple(
            _backend(payload["backend_fields"], row, box, problems) for row in payload["backends"]
        )
        raw = payload["policy"]
        policy = None
        if raw is not None:
            policy = _build(
                Policy, {n: _build(_SECTIONS[n], v) if n in _SECTIONS else v for n, v in raw.items()}
            )
        settings = payload["settings"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in settings.items()):
            raise SnapshotError("settings must map names to JSON text")
        trust = {ip: (str(key_id), float(until)) for ip, (key_id, until) in payload.get("trust", {}).items()}
        snapshot = Snapshot(
            version=int(payload["version"]), keys=keys, backends=backends, policy=policy, trust=trust
        )
        return Decoded(snapshot, settings, float(payload["published_at"]), tuple(problems))
    except SnapshotError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"malformed snapshot: {type(exc).__name__}: {exc}") from None


def _as_dict(obj: Any) -> dict[str, Any]:
    """A dataclass's fields by name, config sections inside it as dicts too."""
    return {f.name: _as_dict(v) if is_dataclass(v := getattr(obj, f.name)) else v for f in fields(obj)}


def _tuples(value: Any) -> Any:
    """JSON's lists back to the tuples a Snapshot holds, at any depth."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    """cls from the fields it knows; unknown names are a newer control node's and are skipped."""
    known = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
    if missing:
        raise SnapshotError(f"{cls.__name__} without {', '.join(missing)}")
    return cls(**{n: _tuples(v) for n, v in values.items() if n in known})


def _record(cls: type, names: list[str], row: list[Any]) -> Any:
    if len(names) != len(row):
        raise SnapshotError(f"a {cls.__name__} row has {len(row)} values for {len(names)} fields")
    return _build(cls, dict(zip(names, row, strict=True)))


def _backend(names: list[str], row: list[Any], box: SecretBox, problems: list[str]) -> BackendRecord:
    b = _record(BackendRecord, names, row)
    if b.credential:
        b = replace(b, credential=_unseal(box, b.name, b.credential, problems))
    return b


def _unseal(box: SecretBox, backend: str, sealed: str, problems: list[str]) -> str:
    if not box.key_file.exists():  # never create one here: it could not open anything anyway
        problems.append(
            f"backend {backend}: its credential is sealed with the control node's secrets key, and "
            f"{box.key_file} does not exist on this node: copy it from the control node"
        )
        return ""
    try:
        return box.decrypt(sealed.encode("ascii"))
    except SecretBoxError as exc:
        problems.append(f"backend {backend}: {exc} (the control node's key file must be copied here)")
        return ""
