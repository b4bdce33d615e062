"""Simulator settings from the command line, and per-request knobs that X-Sim-* headers override."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Process-wide behaviour, fixed at start (see README.md for every flag)."""

    host: str = "127.0.0.1"
    port: int = 11434
    models: tuple[str, ...] = ()
    loaded: tuple[str, ...] = ()
    tokens: int = 12
    rate: float = 0.0
    chunk_size: int = 1
    delay_ms: float = 0.0
    fail: bool = False
    die_after: int | None = None
    version: str = "0.12.0"
    name: str = ""
    ready_file: str = ""
    provider: bool = False  # /v1 answers as OpenAI itself, not as Ollama's compatibility layer
    api_key: str = ""  # when set, /v1 routes need it (Bearer; x-api-key on /v1/messages)
    base_path: str = "/v1"  # where the OpenAI routes live, e.g. /compatible-mode/v1
    journal_bodies: bool = False  # keep request bodies in /_sim/requests


@dataclass(frozen=True, slots=True)
class Knobs:
    """How one request is answered: token count, pacing, injected delay, failure and cut-off."""

    tokens: int
    rate: float
    chunk_size: int
    delay_s: float
    fail_status: int | None
    die_after: int | None

    @property
    def interval_s(self) -> float:
        """Pause between two chunks of `chunk_size` tokens; 0 means as fast as possible."""
        return self.chunk_size / self.rate if self.rate > 0 else 0.0


class KnobError(ValueError):
    """An X-Sim-* header with a value the simulator cannot use."""


def _number(headers: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise KnobError(f"invalid {name} header: {raw!r}") from None
    if value < minimum:
        raise KnobError(f"invalid {name} header: {raw!r} (minimum {minimum:g})")
    return value


def _fail_status(raw: str) -> int | None:
    """'1'/'true' -> 500, a status code 400..599 -> itself, '0'/'false' -> no failure."""
    lowered = raw.strip().lower()
    if lowered in ("0", "false", "no", ""):
        return None
    if lowered in ("1", "true", "yes"):
        return 500
    if lowered.isdigit() and 400 <= int(lowered) <= 599:
        return int(lowered)
    raise KnobError(f"invalid x-sim-fail header: {raw!r}")


def resolve(settings: Settings, headers: Mapping[str, str], work_route: bool) -> Knobs:
    """Knobs for one request: headers (lower-case names) win; flags for delay/failure hit work routes only."""
    delay_default = settings.delay_ms if work_route else 0.0
    fail_raw = headers.get("x-sim-fail")
    if fail_raw is not None:
        fail_status = _fail_status(fail_raw)
    else:
        fail_status = 500 if settings.fail and work_route else None
    die_default = -1.0 if settings.die_after is None else float(settings.die_after)
    die_after = _number(headers, "x-sim-die-after", die_default, -1)
    return Knobs(
        tokens=int(_number(headers, "x-sim-tokens", settings.tokens, 0)),
        rate=_number(headers, "x-sim-rate", settings.rate, 0),
        chunk_size=int(_number(headers, "x-sim-chunk-size", settings.chunk_size, 1)),
        delay_s=_number(headers, "x-sim-delay-ms", delay_default, 0) / 1000.0,
        fail_status=fail_status,
        die_after=None if die_after < 0 else int(die_after),
    )
