"""A metrics table in a temporary directory, and the rendered exposition read back by a real parser."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fortress.metrics.exposition import render
from fortress.metrics.families import families
from fortress.metrics.recorder import Recorder
from fortress.metrics.table import MetricsTable

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """The exposition read back by prometheus_client's parser: (sample name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def scrape(table: MetricsTable) -> Samples:
    """Collect, render, and parse the text back."""
    return parse(render(families(table.collect(), time.time())).decode())


@pytest.fixture
def table_path(tmp_path: Path) -> str:
    path = str(tmp_path / "metrics.shm")
    MetricsTable.create(path, workers=2)
    return path


@pytest.fixture
def owned(table_path: str) -> Iterator[tuple[MetricsTable, Recorder]]:
    """This process's table and its recorder on a claimed slot."""
    table = MetricsTable(table_path)
    recorder = Recorder(table, table.claim())
    yield table, recorder
    recorder.close()
    table.close()
