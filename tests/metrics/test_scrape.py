"""Issue 15.1 acceptance: GET /metrics on a running proxy counts every request, whichever worker answers.

A real `fortress serve` with two workers (SO_REUSEPORT) in front of the simulator; each request and each
scrape is a new connection, so the kernel spreads them over both workers. The worker that answered is
told by the X-Request-ID prefix Fortress gives it (one random prefix per worker). Every scrape is read
back with prometheus_client's parser.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import Fortress, Sim, make_fortress

from .conftest import Samples, parse

GENERATE = {"model": "llama3.2", "prompt": "count me", "stream": False}


def metrics(f: Fortress, headers: dict[str, str] | None = None) -> tuple[Samples, str, str]:
    """One scrape on a new connection: samples, raw text, and the answering worker's id prefix."""
    r = httpx.get(f"{f.url}/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(r.text), r.text, worker_of(r)


def worker_of(r: httpx.Response) -> str:
    return r.headers["x-request-id"].split("-")[0]


def requests_total(s: Samples, route: str, status: str) -> float:
    return s.get(("fortress_requests_total", (("route", route), ("status", status))), 0)


def test_a_scrape_after_n_requests_across_two_workers_counts_all_n(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], "[proxy]\nworkers = 2\n")
    key = f.key("alice")
    key_id = key.split("_")[1]
    f.serve()
    try:
        n, refused = 40, 6
        served_by: set[str] = set()
        prompt = completion = 0
        for _ in range(n):
            r = httpx.post(f"{f.url}/api/generate", json=GENERATE, headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            prompt += r.json()["prompt_eval_count"]
            completion += r.json()["eval_count"]
            served_by.add(worker_of(r))
        for _ in range(refused):
            assert httpx.get(f"{f.url}/api/tags", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert len(served_by) == 2, "the requests should have been spread over both workers"

        # the last answer reaches the client a moment before its worker counts it: wait for that once
        end = time.monotonic() + 10
        while requests_total(metrics(f)[0], "/api/tags", "401") < refused:
            assert time.monotonic() < end, "the last requests were never counted"
            time.sleep(0.05)

        scraped_by: set[str] = set()
        scrapes = 0
        while len(scraped_by) < 2 or scrapes < 6:
            s, text, worker = metrics(f)
            scraped_by.add(worker)
            scrapes += 1
            assert scrapes < 200, "every scrape landed on the same worker"
            assert requests_total(s, "/api/generate", "200") == n
            assert requests_total(s, "/api/tags", "401") == refused
            generate = (("route", "/api/generate"),)
            assert s[("fortress_request_duration_seconds_count", generate)] == n
            assert s[("fortress_request_ttfb_seconds_count", generate)] == n
            assert s[("fortress_request_duration_seconds_bucket", (("le", "+Inf"), *generate))] == n
            body = httpx.Request("POST", "/", json=GENERATE).content
            assert s[("fortress_request_bytes_total", generate)] == n * len(body)
            assert s[("fortress_tokens_total", (("kind", "prompt"), ("model", "llama3.2")))] == prompt
            assert s[("fortress_tokens_total", (("kind", "completion"), ("model", "llama3.2")))] == completion
            assert s[("fortress_workers", ())] == 2
            assert s[("fortress_backend_up", (("backend", "local"),))] == 1
            assert key_id not in text and "alice" not in text and "nope" not in text
        assert scraped_by == served_by
        time.sleep(1.2)  # a periodic publish by each worker, with the scrapes' own in between
    finally:
        out = f.stop()
    assert "draining" in out, out
    assert "metrics publish failed" not in out and "Traceback" not in out, out


def test_labels_stay_bounded_whatever_paths_and_models_clients_send(fortress: Fortress) -> None:
    """Route labels are route-table names and models come only from answers that carry tokens, so a
    client inventing paths and model names adds requests, never series."""
    auth = {"Authorization": f"Bearer {fortress.key('alice')}"}

    def noise(tag: str) -> None:
        with httpx.Client(base_url=fortress.url, headers=auth) as c:
            for i in range(40):
                assert c.get(f"/api/{tag}{i}").status_code == 404
                assert c.get(f"/v1/{tag}{i}").status_code == 404
                assert c.get(f"/{tag}{i}/x").status_code == 404
                assert c.get(f"/v1/models/{tag}{i}").status_code == 404
                assert c.head(f"/api/blobs/{tag}{i}").status_code == 403  # model management: admin keys
                r = c.post(
                    "/api/generate", json={"model": f"{tag}-model-{i}", "prompt": "x", "stream": False}
                )
                assert r.status_code == 404

    def series() -> tuple[set[tuple], Samples, str]:
        r = httpx.get(f"{fortress.url}/metrics")
        s = parse(r.text)
        return {k for k in s if k[0] != "fortress_request_duration_seconds_bucket"}, s, r.text

    series()  # the scrape route itself has a series from the first scrape on
    noise("qzxa")
    before, s, _ = series()
    noise("qzxb")
    after, s2, text = series()
    assert after == before  # 200 new paths and 40 new model names: not one new series
    routes = {dict(labels)["route"] for name, labels in after if name == "fortress_requests_total"}
    assert routes == {"/api/*", "/v1/*", "*", "/v1/models/*", "/api/blobs/*", "/api/generate", "/metrics"} | {
        "/api/version"  # fortress.key() waits for the new key with it
    }
    assert requests_total(s2, "/api/*", "404") == requests_total(s, "/api/*", "404") + 40
    assert not any(name == "fortress_tokens_total" for name, _ in after)
    for private in ("qzx", "model-", "alice", "127.0.0.1"):
        assert private not in text
