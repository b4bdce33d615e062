"""A week of believable traffic for the admin's screenshots and chart tests.

Users, keys and backends are created through fortress.state.repo (as the admin and CLI do); usage rows
go through fortress.state.usage.store(), the function the proxy's usage writer calls, so the raw table
and the hourly roll-ups agree exactly as in production. Deterministic for a given seed and `now`.

The story: office hours and quiet weekends for people, a support bot around the clock, a CI bot that
bursts into its rate limit, a nightly embedding batch, a few anonymous scanners getting 401, and a
two-hour outage of gpu-2 two days ago (502/504).
"""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fortress.state import repo
from fortress.state.db import connect
from fortress.state.usage import UsageEvent, as_row, store

# model -> (backends that serve it, path, first-byte ms, ms per generated token, mean completion tokens)
MODELS: dict[str, tuple[tuple[str, ...], str, float, float, int]] = {
    "llama3.2:1b": (("local", "gpu-2"), "/api/chat", 70, 9, 180),
    "qwen3:0.6b": (("local",), "/api/generate", 45, 6, 90),
    "llama3.1:8b": (("gpu-2",), "/api/chat", 320, 28, 260),
    "qwen2.5-coder:7b": (("gpu-2",), "/v1/chat/completions", 280, 24, 340),
    "nomic-embed-text": (("local", "gpu-2"), "/api/embed", 25, 0, 0),
    "gpt-4o-mini": (("cloud",), "/v1/chat/completions", 450, 12, 220),
}


@dataclass(frozen=True)
class Person:
    name: str
    keys: tuple[str, ...]  # key labels
    per_hour: float  # mean requests in a busy hour
    models: dict[str, float]  # preference weights
    pattern: str  # office | always | steady | nightly


PEOPLE = (
    Person(
        "ana", ("laptop", "notebook"), 26, {"llama3.1:8b": 5, "llama3.2:1b": 3, "gpt-4o-mini": 2}, "office"
    ),
    Person("ben", ("ide",), 20, {"qwen2.5-coder:7b": 6, "llama3.1:8b": 4}, "office"),
    Person("chloe", ("laptop",), 12, {"gpt-4o-mini": 6, "llama3.2:1b": 4}, "office"),
    Person(
        "dev-team",
        ("staging", "shared"),
        18,
        {"llama3.2:1b": 4, "qwen2.5-coder:7b": 3, "qwen3:0.6b": 3},
        "office",
    ),
    Person("support-bot", ("prod",), 40, {"llama3.2:1b": 8, "nomic-embed-text": 2}, "always"),
    Person("ci-bot", ("github-actions",), 22, {"qwen3:0.6b": 1}, "steady"),
    Person("research", ("batch",), 160, {"nomic-embed-text": 9, "llama3.1:8b": 1}, "nightly"),
)
OUTAGE_BACKEND = "gpu-2"


def _shape(pattern: str, hour_ts: float) -> float:
    """How busy this kind of client is in a given UTC hour (0..1)."""
    t = time.gmtime(hour_ts)
    weekend = t.tm_wday >= 5
    h = t.tm_hour
    if pattern == "office":
        day = max(0.0, math.sin(math.pi * (h - 7) / 12)) if 7 <= h <= 19 else 0.0
        return (0.15 if weekend else 1.0) * (0.04 + day)
    if pattern == "always":
        return (0.6 if weekend else 1.0) * (0.35 + 0.65 * max(0.0, math.sin(math.pi * (h - 5) / 18)))
    if pattern == "steady":
        return 0.3 if weekend else 1.0
    return 1.0 if h in (1, 2) else 0.0  # nightly


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    n, p, limit = 0, 1.0, math.exp(-mean)
    while True:
        p *= rng.random()
        if p <= limit:
            return n
        n += 1


def events(keys: dict[str, list[str]], now: float, days: int = 7, seed: int = 12) -> list[UsageEvent]:
    """The usage rows of `days` days up to `now`; `keys` maps each person to their key ids."""
    rng = random.Random(seed)
    first_hour = int(now // 3600) - days * 24 + 1
    outage = (int(now // 86400) - 2) * 86400 + 13 * 3600  # 13:00-15:00 UTC two days ago
    out: list[UsageEvent] = []
    for hour in range(first_hour, int(now // 3600) + 1):
        hour_ts = hour * 3600.0
        for person in PEOPLE:
            for _ in range(_poisson(rng, person.per_hour * _shape(person.pattern, hour_ts))):
                ts = hour_ts + rng.random() * 3600
                if ts <= now:
                    out.append(_request(rng, person, rng.choice(keys[person.name]), ts, outage))
        for _ in range(_poisson(rng, 1.5)):  # scanners without a key
            ts = hour_ts + rng.random() * 3600
            if ts <= now:
                out.append(
                    UsageEvent(
                        ts=ts,
                        request_id=uuid.UUID(int=rng.getrandbits(128)).hex,
                        client_ip=f"203.0.113.{rng.randrange(1, 255)}",
                        method=rng.choice(("GET", "POST")),
                        path=rng.choice(("/api/tags", "/api/chat", "/v1/models", "/api/pull")),
                        status=401,
                        duration_ms=round(rng.uniform(0.2, 0.9), 2),
                        error="missing or invalid key",
                    )
                )
    out.sort(key=lambda e: e.ts)
    return out


def _request(rng: random.Random, person: Person, key_id: str, ts: float, outage: float) -> UsageEvent:
    model = rng.choices(list(person.models), weights=list(person.models.values()))[0]
    backends, path, ttfb_mean, per_token, completion_mean = MODELS[model]
    backend = rng.choice(backends)
    embed = per_token == 0
    prompt = int(rng.lognormvariate(math.log(40 if embed else 350), 0.6))
    completion = 0 if embed else max(1, int(rng.lognormvariate(math.log(completion_mean), 0.5)))
    ttfb = rng.lognormvariate(math.log(ttfb_mean), 0.35)
    duration = ttfb + completion * per_token * rng.uniform(0.8, 1.3)
    status, error = 200, None
    roll = rng.random()
    if backend == OUTAGE_BACKEND and outage <= ts < outage + 7200:
        status, error = rng.choice(((502, "backend connection refused"), (504, "first byte timed out")))
    elif person.pattern == "steady" and roll < 0.06:
        status, error = 429, "rate limit 600/1m"
    elif roll < 0.004:
        model, status, error = rng.choice(("llama3:70b", "mistral:7b", "gpt-5")), 404, "model not found"
    elif roll < 0.007:
        status, error = 400, "invalid JSON body"
    ok = status == 200
    if not ok:  # refused early, or the backend failed (a timeout waited the whole first-byte budget)
        duration = 30000.0 if status == 504 else rng.uniform(1, 30)
    return UsageEvent(
        ts=ts,
        request_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        key_id=key_id,
        user_name=person.name,
        client_ip=f"10.0.{PEOPLE.index(person)}.{rng.randrange(2, 40)}",
        method="POST",
        path=path,
        model=model,
        backend=backend if status not in (400, 404, 429) else None,
        status=status,
        ttfb_ms=round(ttfb, 1) if ok else None,
        duration_ms=round(duration, 1),
        bytes_in=prompt * 4 + 120,
        bytes_out=completion * 6 + 300 if ok else 80,
        prompt_eval_count=prompt if ok else None,
        eval_count=completion if ok and not embed else None,
        stream=int(ok and not embed and rng.random() < 0.7),
        error=error,
    )


async def _accounts(db_path: Path) -> dict[str, list[tuple[str, str]]]:
    """The people and their keys (created now, as an admin would); person -> [(key id, full key)]."""
    db = await connect(db_path)
    try:
        keys: dict[str, list[tuple[str, str]]] = {}
        for person in PEOPLE:
            await repo.add_user(db, person.name, actor="seed")
            rate = "600/1m" if person.pattern == "steady" else ""
            for label in person.keys:
                full, row = await repo.create_key(db, person.name, actor="seed", label=label, rate=rate)
                keys.setdefault(person.name, []).append((row.id, full))
        return keys
    finally:
        await db.close()


def seed_history(
    db_path: Path, now: float | None = None, days: int = 7, seed: int = 12
) -> dict[str, list[str]]:
    """Create the people, their keys and `days` days of usage up to `now`; returns each person's full keys."""
    now = time.time() if now is None else now
    with ThreadPoolExecutor(1) as pool:  # its own thread: Playwright's sync API holds a loop in this one
        keys = pool.submit(asyncio.run, _accounts(db_path)).result()
    ids = {person: [key_id for key_id, _ in pairs] for person, pairs in keys.items()}
    rows = [as_row(e) for e in events(ids, now, days, seed)]
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        for i in range(0, len(rows), 5000):  # batches, as the writer process stores them
            store(conn, rows[i : i + 5000])
    finally:
        conn.close()
    return {person: [full for _, full in pairs] for person, pairs in keys.items()}
