"""Issue 4 figure: what routing among 50 backends x 200 models adds to a request, end to end.

The same simulator stands behind both proxies: one names it once with 3 models, the other names it
50 times with 200 models, so every backend holds every model (the router's worst case). Timed
requests are small non-streaming /api/show calls, one at a time over one keep-alive connection.
Run as a script for the figures: `.venv/bin/python -m tests.multi.test_scale`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx

from tests.conftest import Fortress, Sim, make_fortress, start_sim, stop
from tests.multi.conftest import auth, wait_until

BACKENDS = 50
MODELS = [f"model{i}:{'latest' if i % 2 else '7b'}" for i in range(200)]
REQUESTS = 600


def _proxy(tmp: Path, sim: Sim, backends: int) -> Fortress:
    tmp.mkdir()
    blocks = "".join(f'[[backends]]\nname = "b{i}"\nurl = "{sim.url}"\n' for i in range(backends))
    f = make_fortress(tmp, [], blocks)
    f.serve()
    return f


def _wait_inventory(f: Fortress, key: str, count: int) -> None:
    def listed() -> bool:
        return len(httpx.get(f"{f.url}/api/tags", headers=auth(key)).json()["models"]) == count

    wait_until(listed, 15, "inventory of every backend")


def _timings(f: Fortress, key: str, models: list[str], count: int) -> list[float]:
    """Seconds per request, sorted; the first 50 are a warm-up and not kept."""
    out = []
    with httpx.Client(headers=auth(key)) as client:
        for i in range(count + 50):
            t0 = time.perf_counter()
            r = client.post(f"{f.url}/api/show", json={"model": models[i % len(models)]})
            took = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            if i >= 50:
                out.append(took)
    return sorted(out)


def measure(tmp: Path, count: int = REQUESTS) -> dict[str, float]:
    small = start_sim("--models", ",".join(MODELS[:3]), name="small")
    big = start_sim("--models", ",".join(MODELS), name="big")
    proxies = []
    try:
        one = _proxy(tmp / "one", small, 1)
        many = _proxy(tmp / "many", big, BACKENDS)
        proxies = [one, many]
        figures: dict[str, float] = {}
        for label, f, models in (("1x3", one, MODELS[:3]), (f"{BACKENDS}x{len(MODELS)}", many, MODELS)):
            key = f.key("alice")
            _wait_inventory(f, key, len(models))
            t = _timings(f, key, models, count)
            figures[f"{label}_p50_ms"] = t[len(t) // 2] * 1000
            figures[f"{label}_p99_ms"] = t[int(len(t) * 0.99)] * 1000
        scale = f"{BACKENDS}x{len(MODELS)}"
        figures["added_p50_ms"] = figures[f"{scale}_p50_ms"] - figures["1x3_p50_ms"]
        figures["added_p99_ms"] = figures[f"{scale}_p99_ms"] - figures["1x3_p99_ms"]
        return figures
    finally:
        for f in proxies:
            f.stop()
        stop(small.proc)
        stop(big.proc)


def test_routing_among_50_backends_adds_little_latency(tmp_path: Path) -> None:
    figures = measure(tmp_path, count=300)
    print({k: round(v, 3) for k, v in figures.items()})
    assert figures["added_p50_ms"] < 2.0, figures  # typically well under 0.1 ms; the machine is shared


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        print({k: round(v, 3) for k, v in measure(Path(tmp), count=3000).items()})
