"""HEAD/POST /api/blobs/:digest: only digests are kept; uploads are hashed as they arrive."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fortress.sim.request import Refusal, Request
from fortress.sim.transfers import DIGEST
from fortress.sim.wire import Full, error

if TYPE_CHECKING:
    from fortress.sim.app import Simulator


def _hexdigest(param: str) -> str:
    match = DIGEST.fullmatch(param)
    if match is None:
        raise Refusal(400, "invalid digest format")
    return match.group(1).lower()


def head_blob(sim: Simulator, req: Request) -> Full:
    if _hexdigest(req.param) in sim.blobs:
        return Full(200, b"", None)
    return error(404, f'blob "{req.param}" not found')


def post_blob(sim: Simulator, req: Request) -> Full:
    expected = _hexdigest(req.param)
    if expected in sim.blobs:
        return Full(200, b"", None)
    if req.body_sha256 != expected:
        raise Refusal(400, f'digest mismatch, expected "sha256:{expected}", got "sha256:{req.body_sha256}"')
    sim.blobs.add(expected)
    return Full(201, b"", None)
