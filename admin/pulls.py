"""Model pulls running in the admin: one background task per pull, progress kept for polling.

The browser polls /models/pulls/{id}; the task relays the backend's NDJSON progress into a
PullState, so progress survives page changes and the proxy is never involved.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

from admin import backend_client
from admin.backend_client import Target


@dataclass
class PullState:
    id: str
    backend: str
    model: str
    status: str = "starting"
    layers: dict[str, tuple[int, int]] = field(default_factory=dict)  # digest -> (completed, total)
    done: bool = False
    error: str = ""
    started: float = field(default_factory=time.time)

    @property
    def total(self) -> int:
        return sum(t for _, t in self.layers.values())

    @property
    def completed(self) -> int:
        return sum(c for c, _ in self.layers.values())

    @property
    def percent(self) -> int:
        return (
            int(100 * self.completed / self.total)
            if self.total
            else (100 if self.done and not self.error else 0)
        )

    def apply(self, line: dict) -> None:
        """Fold one progress object from Ollama into the state (pure)."""
        if "error" in line:
            self.error, self.done = str(line["error"]), True
            return
        self.status = str(line.get("status", self.status))
        if "digest" in line and "total" in line:  # one line per layer; the bar covers all layers
            self.layers[str(line["digest"])] = (int(line.get("completed") or 0), int(line["total"] or 0))
        if self.status == "success":
            self.done = True
            self.layers = {d: (t, t) for d, (_, t) in self.layers.items()}


class Pulls:
    """Running and recent pulls, by id; finished ones are forgotten after an hour."""

    def __init__(self) -> None:
        self.jobs: dict[str, PullState] = {}
        self._tasks: set[asyncio.Task] = set()

    def start(self, target: Target, model: str) -> PullState:
        self._forget_old()
        state = PullState(id=secrets.token_urlsafe(9), backend=target.name, model=model)
        self.jobs[state.id] = state
        task = asyncio.create_task(self._run(target, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return state

    async def _run(self, target: Target, state: PullState) -> None:
        try:
            async for line in backend_client.pull(target, state.model):
                state.apply(line)
                if state.done:
                    break
        except Exception as exc:  # any transport failure ends this pull, never the admin
            state.error = f"pull failed: {type(exc).__name__}"
        if not state.done and not state.error:
            state.error = "the backend closed the stream before success"
        state.done = True

    def _forget_old(self) -> None:
        cutoff = time.time() - 3600
        self.jobs = {k: v for k, v in self.jobs.items() if not v.done or v.started > cutoff}

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
