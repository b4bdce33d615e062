"""Issue 15.2: the JSON access log (one line per request, the id the client saw, never a secret), off by
default; `[logging]` level and format for the other logs; the `[proxy] log_level` alias."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fortress import config, logs
from fortress.state.usage import UsageEvent, as_row
from tests.conftest import PY, ROOT, Fortress, Sim, make_fortress, stop, wait_port

# the access line of the row in test_access_line_and_chunks: every field, in order
LINE = {
    "time": "2023-11-14T22:13:20.250Z",
    "request_id": "abc",
    "client_ip": "",
    "key_id": None,
    "user": None,
    "method": "GET",
    "path": "/api/tags",
    "model": None,
    "backend": None,
    "status": 200,
    "ttfb_ms": None,
    "duration_ms": 1.235,
    "prompt_tokens": None,
    "completion_tokens": None,
    "bytes_in": 0,
    "bytes_out": 0,
    "stream": True,
    "error": None,
}
BODY = {"model": "llama3.2", "prompt": "the prompt is private", "stream": False}


def _serve(f: Fortress, out: Path, err: Path) -> None:
    """Start the proxy with stdout and stderr in their own files (the access log may go to stdout)."""
    with out.open("wb") as o, err.open("wb") as e:
        f.proc = subprocess.Popen(
            [PY, "-m", "fortress", "serve", "--config", str(f.config)], cwd=ROOT, stdout=o, stderr=e
        )
    wait_port(f.port, f.proc)


def _requests(f: Fortress, key: str) -> dict[str, tuple[int, str, str]]:
    """A mix of answers; returns request id -> (status, method, path) as the client saw them."""
    wrong = key[: key.rindex("_") + 1] + "W" * (len(key) - key.rindex("_") - 1)
    auth = {"Authorization": f"Bearer {key}"}
    replies = [
        httpx.post(f"{f.url}/api/generate", json=BODY, headers=auth),
        httpx.post(f"{f.url}/api/generate", json={**BODY, "stream": True}, headers=auth),
        httpx.post(
            f"{f.url}/api/chat", json={"model": "llama3.2", "messages": []}, headers={"X-API-Key": key}
        ),
        httpx.get(f"{f.url}/api/tags", headers={"Authorization": f"Bearer {wrong}"}),
        httpx.get(f"{f.url}/api/tags?api_key={key}&token=query-secret"),
        httpx.get(f"{f.url}/api/nothing-here", headers=auth),
        httpx.get(f"{f.url}/v1/models", headers=auth),
    ]
    assert [r.status_code for r in replies] == [200, 200, 200, 401, 401, 404, 200]
    return {r.headers["x-request-id"]: (r.status_code, r.request.method, r.request.url.path) for r in replies}


def _served(tmp_path: Path, sim: Sim, extra: str) -> tuple[str, dict[str, tuple[int, str, str]]]:
    """A proxy with `extra` settings serves _requests() and stops; returns the key and what was seen."""
    f = make_fortress(tmp_path, [("local", sim.url)], extra)
    key = f.key("alice")
    _serve(f, tmp_path / "out.txt", tmp_path / "err.txt")
    try:
        return key, _requests(f, key)
    finally:
        stop(f.proc)  # type: ignore[arg-type]


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{") and '"request_id"' in line]


def test_access_log_to_a_file_has_one_line_per_request_and_no_secret(tmp_path: Path, sim: Sim) -> None:
    key, seen = _served(
        tmp_path, sim, '[logging]\naccess_log = "json"\naccess_log_path = "logs/access.log"\n'
    )
    text = (tmp_path / "logs" / "access.log").read_text()
    lines = _lines(text)
    assert len(lines) == len(text.splitlines()) == len(seen)
    assert {line["request_id"]: (line["status"], line["method"], line["path"]) for line in lines} == seen
    for line in lines:
        assert list(line) == list(LINE)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
        assert line["client_ip"] == "127.0.0.1" and line["duration_ms"] >= 0
    generate = next(line for line in lines if line["path"] == "/api/generate" and not line["stream"])
    assert generate["user"] == "alice" and generate["key_id"] == key.split("_")[1]
    assert generate["model"] == "llama3.2" and generate["backend"] == "local"
    assert generate["completion_tokens"] > 0 and generate["ttfb_ms"] is not None
    secret = key.split("_", 2)[2]
    for private in (key, secret, "W" * len(secret), "query-secret", "api_key", BODY["prompt"]):
        assert private not in text
    assert _lines((tmp_path / "out.txt").read_text()) == []  # the file, not stdout


def test_access_log_to_stdout(tmp_path: Path, sim: Sim) -> None:
    _, seen = _served(tmp_path, sim, '[logging]\naccess_log = "json"\n')
    assert {line["request_id"] for line in _lines((tmp_path / "out.txt").read_text())} == set(seen)
    assert _lines((tmp_path / "err.txt").read_text()) == []


def test_access_log_is_off_by_default(fortress: Fortress) -> None:
    key = fortress.key("alice")
    r = httpx.post(f"{fortress.url}/api/generate", json=BODY, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200
    out = fortress.stop()
    assert r.headers["x-request-id"] not in out
    assert not list(fortress.home.rglob("*.log"))


def test_json_logs_at_the_configured_level(tmp_path: Path, sim: Sim) -> None:
    f = make_fortress(tmp_path, [("local", sim.url)], '[logging]\nformat = "json"\n')
    _serve(f, tmp_path / "out.txt", tmp_path / "err.txt")
    stop(f.proc)  # type: ignore[arg-type]
    records = [json.loads(line) for line in (tmp_path / "err.txt").read_text().splitlines()]
    assert records and all({"time", "level", "logger", "pid", "message"} <= set(r) for r in records)
    assert any(r["level"] == "info" and "listening on" in r["message"] for r in records)

    (tmp_path / "quiet").mkdir()
    quiet = make_fortress(tmp_path / "quiet", [("local", sim.url)], '[proxy]\nlog_level = "warning"\n')
    _serve(quiet, tmp_path / "quiet-out.txt", tmp_path / "quiet-err.txt")
    stop(quiet.proc)  # type: ignore[arg-type]
    assert "listening on" not in (tmp_path / "quiet-err.txt").read_text()


def test_logging_settings_are_checked_and_the_old_name_still_works(tmp_path: Path) -> None:
    assert config.Config().logging == config.LoggingConfig("info", "text", "off", "")
    assert config.parse({"proxy": {"log_level": "debug"}}).logging.level == "debug"
    both = config.parse({"proxy": {"log_level": "debug"}, "logging": {"level": "error"}})
    assert both.logging.level == "error"
    for key, value in (("level", "verbose"), ("format", "xml"), ("access_log", "text")):
        with pytest.raises(config.ConfigError, match=rf"logging\.{key}"):
            config.parse({"logging": {key: value}})
    with pytest.raises(config.ConfigError, match=r"logging\.colour"):
        config.parse({"logging": {"colour": True}})
    path = tmp_path / "etc" / "fortress.toml"
    path.parent.mkdir()
    path.write_text('[logging]\naccess_log = "json"\naccess_log_path = "../log/access.log"\n')
    assert config.load(str(path)).logging.access_log_path == str(tmp_path / "log" / "access.log")


def test_access_line_and_chunks() -> None:
    fields = {"request_id": "abc", "method": "GET", "path": "/api/tags", "status": 200, "stream": 1}
    row = as_row(UsageEvent(ts=1_700_000_000.25, duration_ms=1.23456, **fields))  # type: ignore[arg-type]
    line = logs.access_line(row)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == LINE
    parts = list(logs.chunks([b"a" * 3000 + b"\n", b"b" * 2000 + b"\n", b"c" * 5000 + b"\n", b"d\n"]))
    assert [len(p) for p in parts] == [3001, 2001, 5001, 2]  # whole lines, <= 4096 bytes unless one is longer
    assert b"".join(parts).count(b"\n") == 4


def test_json_formatter_keeps_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("fortress.x", logging.ERROR, __file__, 1, "failed %s", ("here",), None)
        record.exc_info = sys.exc_info()
    out = json.loads(logs.JsonFormatter().format(record))
    assert out["message"] == "failed here" and out["level"] == "error" and "ValueError: boom" in out["exc"]
