"""The stream and upload workloads against the real simulator, small enough to run in seconds."""

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import raise_nofile
from bench.stack import Cpus, Stack, open_stack
from bench.workloads import SMOKE, Blob, fast_stream, slow_streams, upload


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("sim")
    s = open_stack("sim", ("direct",), Cpus(None, None), workdir, raise_nofile())
    yield s
    s.close()


def test_blob_digest_matches_its_pieces_and_differs_per_salt() -> None:
    b = Blob.make(3, salt=1)
    assert hashlib.sha256(b"".join(b.pieces())).hexdigest() == b.digest
    assert Blob.make(3, salt=2).digest != b.digest


async def test_upload_of_a_new_blob_is_created(stack: Stack) -> None:
    figures = await upload(stack.targets[0], stack, Blob.make(4, salt=0))
    assert figures["status"] == 201 and figures["errors"] == 0 and figures["mb_per_s"] > 0


async def test_fast_stream_counts_whole_responses(stack: Stack) -> None:
    plan = dataclasses.replace(SMOKE, fast_streams=2, fast_seconds=0.3, fast_chunks=200)
    figures = await fast_stream(stack.targets[0], stack, plan)
    assert figures["errors"] == 0
    assert figures["chunks"] % 201 == 0 and figures["chunks"] >= 2 * 201  # 200 tokens + the final line


async def test_slow_streams_are_paced_by_the_requested_rate(stack: Stack) -> None:
    plan = dataclasses.replace(
        SMOKE, slow_streams=10, slow_rate=20.0, slow_seconds=0.5, slow_ramp_seconds=0.1
    )
    figures = await slow_streams(stack.targets[0], stack, plan)
    assert figures["errors"] == 0
    assert 40 < figures["gap_p50_ms"] < 60
    assert 0 < figures["ttft_p50_ms"] <= figures["ttft_p99_ms"]
