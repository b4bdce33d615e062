"""The translate stack: one Fortress in front of an Ollama simulator and a provider-mode one, so W2t and
W3t compare the raw relay with translation on the same streams."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procs import raise_nofile
from bench.stack import Cpus, Stack, open_stack
from bench.workloads import SMOKE, fast_stream, slow_streams


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("translate")
    s = open_stack("translate", ("fortress",), Cpus(None, None), workdir, raise_nofile())
    yield s
    s.close()


def test_both_routes_go_through_one_fortress(stack: Stack) -> None:
    raw, translated = stack.targets
    assert (raw.name, translated.name) == ("raw", "translated") and raw.service is translated.service
    assert (raw.model, translated.model) == ("bench:latest", "prov/bench:latest")


async def test_raw_and_translated_streams_have_the_same_chunk_counts(stack: Stack) -> None:
    plan = dataclasses.replace(SMOKE, fast_streams=2, fast_seconds=0.3, fast_chunks=200)
    for target in stack.targets:
        figures = await fast_stream(target, stack, plan)
        assert figures["errors"] == 0, target.name
        assert figures["chunks"] % 201 == 0 and figures["chunks"] >= 2 * 201  # 200 tokens + the final line
        assert figures["cpu_s_per_100k_chunks"] > 0


async def test_paced_translated_streams_keep_their_pace(stack: Stack) -> None:
    plan = dataclasses.replace(
        SMOKE, slow_streams=10, slow_rate=20.0, slow_seconds=0.5, slow_ramp_seconds=0.1
    )
    figures = await slow_streams(stack.targets[1], stack, plan)
    assert figures["errors"] == 0 and 40 < figures["gap_p50_ms"] < 60
