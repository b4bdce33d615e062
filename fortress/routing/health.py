"""A circuit breaker per backend, written as a transition table with an injected clock.

CLOSED: traffic flows; `threshold` consecutive failures trip it OPEN. OPEN: no traffic until the
cool-down has passed, then HALF_OPEN. HALF_OPEN: one probe at a time (a request or the poller's
/api/version check); its success closes the breaker, its failure opens it again.
Failures are connect errors, timeouts and 5xx answers; a 4xx is the backend working correctly.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Event(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    TRIP = "trip"  # the consecutive-failure threshold was reached
    COOL_DOWN = "cool_down"  # the open period is over


TRANSITIONS: dict[State, dict[Event, State]] = {
    State.CLOSED: {Event.SUCCESS: State.CLOSED, Event.FAILURE: State.CLOSED, Event.TRIP: State.OPEN},
    # late answers from requests sent before the trip change nothing while open
    State.OPEN: {Event.SUCCESS: State.OPEN, Event.FAILURE: State.OPEN, Event.COOL_DOWN: State.HALF_OPEN},
    State.HALF_OPEN: {Event.SUCCESS: State.CLOSED, Event.FAILURE: State.OPEN},
}


class BreakerError(RuntimeError):
    """An event that the current state does not accept (a bug in the caller)."""


class Breaker:
    """One backend's health; `available()` is the only call on the hot path."""

    __slots__ = (
        "changed_at",
        "clock",
        "cool_down_s",
        "failures",
        "last_error",
        "probing",
        "state",
        "threshold",
    )

    def __init__(
        self, *, threshold: int = 3, cool_down_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = max(1, threshold)
        self.cool_down_s = cool_down_s
        self.clock = clock
        self.state = State.CLOSED
        self.failures = 0  # consecutive
        self.probing = False  # a half-open probe is in flight
        self.changed_at = clock()
        self.last_error = ""

    def _apply(self, event: Event) -> None:
        try:
            target = TRANSITIONS[self.state][event]
        except KeyError:
            raise BreakerError(f"{event.value} is not valid in state {self.state.value}") from None
        if target is not self.state:
            self.state = target
            self.changed_at = self.clock()
            self.probing = False

    def available(self) -> bool:
        """May a request go there now? Moves OPEN to HALF_OPEN once the cool-down has passed."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if self.clock() - self.changed_at < self.cool_down_s:
                return False
            self._apply(Event.COOL_DOWN)
        return not self.probing

    def begin(self) -> None:
        """A request was sent; in HALF_OPEN it is the one probe, so others keep away."""
        if self.state is State.HALF_OPEN:
            self.probing = True

    def record(self, ok: bool, error: str = "") -> None:
        """The outcome of a request or a health check."""
        if ok:
            self.failures = 0
            self._apply(Event.SUCCESS)
            return
        self.failures += 1
        self.last_error = error
        self._apply(Event.FAILURE)
        if self.state is State.CLOSED and self.failures >= self.threshold:
            self._apply(Event.TRIP)

    def export(self) -> dict[str, Any]:
        """Plain data for the admin dashboard; ages rather than clock readings (clocks differ)."""
        return {
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "since_s": round(self.clock() - self.changed_at, 3),
            "last_error": self.last_error,
        }
