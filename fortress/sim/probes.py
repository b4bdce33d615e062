"""Probe routes (GET|HEAD /, /api/version, GET /api/status) and the test-only /_sim/requests journal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fortress.sim.request import Request
from fortress.sim.wire import TEXT, Full, dumps

if TYPE_CHECKING:
    from fortress.sim.app import Simulator

RUNNING = Full(200, b"Ollama is running", TEXT)
STATUS = Full(200, b'{"cloud":{"disabled":false,"source":"none"}}')


def root(sim: Simulator, req: Request) -> Full:
    return RUNNING


def version(sim: Simulator, req: Request) -> Full:
    return sim.version_reply


def status(sim: Simulator, req: Request) -> Full:
    return STATUS


def journal(sim: Simulator, req: Request) -> Full:
    return Full(200, dumps(sim.journal.entries()))


def clear_journal(sim: Simulator, req: Request) -> Full:
    sim.journal.clear()
    return Full(200, b"", None)
