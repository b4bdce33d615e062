"""The codec micro-benchmark runs and reports every mode (figures are printed, never asserted)."""

from __future__ import annotations

import json

import pytest

from bench import codec_bench
from fortress.translate.generation import _TEXT_EVENT


def test_provider_stream_is_what_a_provider_sends() -> None:
    events = codec_bench.provider_stream(3)
    assert len(events) == 7 and events[-1] == b"data: [DONE]\n\n"
    assert (
        json.loads(events[-2][6:])["choices"] == []
        and json.loads(events[-2][6:])["usage"]["completion_tokens"] == 3
    )
    assert _TEXT_EVENT.fullmatch(events[1])[1] == b"The"  # the benchmark exercises the copying path


def test_report_has_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert codec_bench.main(["--streams", "1", "--tokens", "20", "--rounds", "1"]) == 0
    paced, burst = capsys.readouterr().out.split("\n\n")[1:]
    for table in (paced, burst):
        rows = table.splitlines()[2:]
        assert [row.split("  ")[0] for row in rows] == list(codec_bench.MODES)
        assert all(float(row.split()[-1]) >= 0 for row in rows)


def test_burst_reads_hold_many_events() -> None:
    events = codec_bench.provider_stream(200)
    reads = codec_bench.reads_of(events, burst=True)
    assert b"".join(reads) == b"".join(events) and 1 < len(reads) < len(events) / 10
    assert all(len(read) <= codec_bench.BURST for read in reads)
