"""Not a test: what the hot-path calls cost, measured with timeit (`python -m tests.metrics.cost`).

Prints the best of several runs per call, in nanoseconds, next to an empty method call of the same
arity (the floor any instrumentation pays), so the figures can be read on a busy machine too.
"""

from __future__ import annotations

import os
import tempfile
import timeit

from fortress.metrics.recorder import Recorder
from fortress.metrics.table import MetricsTable

NUMBER = 200_000
REPEAT = 7


class _Empty:
    def request(
        self, route: str, status: int, duration_s: float, ttfb_s: float | None, a: int, b: int
    ) -> None:
        pass


def _best(stmt: str, names: dict[str, object]) -> float:
    return min(timeit.repeat(stmt, globals=names, number=NUMBER, repeat=REPEAT)) / NUMBER * 1e9


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "metrics.shm")
        MetricsTable.create(path)
        table = MetricsTable(path)
        m = Recorder(table, table.claim())
        names = {"m": m, "empty": _Empty()}
        rows = [
            ("empty call, 6 arguments", "empty.request('/api/chat', 200, 0.0123, 0.004, 120, 4000)"),
            ("request() relayed (with ttfb)", "m.request('/api/chat', 200, 0.0123, 0.004, 120, 4000)"),
            ("request() local reply", "m.request('/api/show', 401, 0.00004, None, 0, 60)"),
            ("tokens()", "m.tokens('llama3.2:3b', 31, 220)"),
            ("refused()", "m.refused('rate')"),
        ]
        figures = {label: _best(stmt, names) for label, stmt in rows}
        for label, ns in figures.items():
            print(f"{label:34} {ns:7.0f} ns")
        total = figures["request() relayed (with ttfb)"] + figures["tokens()"]
        print(f"{'relayed metered request, in total':34} {total:7.0f} ns")
        m.close()
        table.close()


if __name__ == "__main__":
    main()
