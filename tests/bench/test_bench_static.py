"""The static stack's Fortress targets: W1's variants (a translated provider model, model "auto") answer
through the static upstream, and a two-worker Fortress serves W1, so issue 14's targets can be measured."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from bench import nginx
from bench.procs import raise_nofile
from bench.run import Bench
from bench.stack import Cpus, Stack, open_stack
from bench.workloads import SMALL, small_requests


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("static")
    s = open_stack("static", ("fortress", "fortress-w2"), Cpus(None, None), workdir, raise_nofile())
    yield s
    s.close()


def _post(stack: Stack, port: int, variant: str) -> httpx.Response:
    small = SMALL[variant]
    url = f"http://127.0.0.1:{port}{small.path}"
    Bench.ready(url, stack.keys.user, small.body)  # "auto" answers 503 until the capabilities are known
    return httpx.post(url, content=small.body, headers={"Authorization": f"Bearer {stack.keys.user}"})


@pytest.mark.parametrize("variant", ["w1c", "w1t", "w1a"])
def test_each_chat_variant_gets_ollamas_answer(stack: Stack, variant: str) -> None:
    fortress = stack.targets[0]
    r = _post(stack, fortress.port, variant)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["message"] == {"role": "assistant", "content": "The quick brown fox jumps"} and doc["done"]
    model = json.loads(SMALL[variant].body)["model"]
    assert doc["model"] == (nginx.MODEL if model == "auto" else model)  # translated: the public name P/M
    if variant == "w1a":
        assert r.headers["X-Fortress-Model"] == nginx.MODEL


def test_translated_variant_goes_through_the_providers_v1(stack: Stack) -> None:
    r = _post(stack, stack.targets[0].port, "w1t")
    assert r.json()["eval_count"] == 5  # from the provider's usage.completion_tokens


def test_wrk_drives_the_variants_and_two_workers_without_errors(stack: Stack, tmp_path: Path) -> None:
    fortress, two = stack.targets
    assert (fortress.name, two.name) == ("fortress", "fortress-w2")
    runs = [(fortress, SMALL[v]) for v in ("w1t", "w1a")] + [(two, SMALL["w1"])]
    for target, small in runs:
        Bench.ready(f"http://127.0.0.1:{target.port}{small.path}", stack.keys.user, small.body)
        figures = small_requests(target, stack, 4, 1, Cpus(None, None), tmp_path, small)
        assert figures["errors"] == 0 and figures["requests"] > 50, (target.name, small.path)
        assert figures["cpu_s_per_10k"] > 0
    assert two.service is not None  # the supervisor's tree, which the Meter measures, holds two workers
    workers = psutil.Process(two.service.proc.pid).children()
    assert sum("serve" in " ".join(w.cmdline()) for w in workers) == 2
