"""One parsed request as handlers see it, and the exception a handler raises to refuse it."""

from __future__ import annotations

from dataclasses import dataclass

from fortress.sim.settings import Knobs


@dataclass(slots=True)
class Request:
    """Recorded by the protocol's parser callbacks; `param` is the path tail of a prefixed route."""

    method: str
    target: str
    path: str
    headers: list[tuple[str, str]]
    lower: dict[str, str]
    keep_alive: bool = True
    param: str = ""
    body: bytes = b""
    body_sha256: str = ""  # hex digest when the route hashes its body instead of keeping it
    knobs: Knobs | None = None
    entry: dict | None = None  # this request's journal entry (None for /_sim/*), for journal.note()


class Refusal(Exception):
    """A handler's error reply; the simulator renders it in the route family's shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
