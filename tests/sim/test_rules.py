"""The simulator's pure rules, without sockets: Go wording, durations, Host guard, names, knobs, /api/ps."""

from __future__ import annotations

import json
import math
import time

import pytest

from fortress.sim import gojson, names
from fortress.sim.catalog import FOREVER_S, Catalog
from fortress.sim.gotime import DurationError, keep_alive_seconds, parse_go_duration, rfc3339nano
from fortress.sim.hostcheck import host_allowed, is_loopback_listener, strip_port
from fortress.sim.settings import KnobError, Settings, resolve


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "EOF"),
        (b"  \n", "EOF"),
        (b"x", "invalid character 'x' looking for beginning of value"),
        (b'{"a":1', "unexpected EOF"),
        (b'{"a" 1}', "invalid character '1' after object key"),
        (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        (b'{"a":[1 2]}', "invalid character '2' after array element"),
        (b"[]", "json: cannot unmarshal array into Go value of type api.GenerateRequest"),
        (b'{"stream":"yes"}',
         "json: cannot unmarshal string into Go struct field GenerateRequest.stream of type *bool"),
    ],
)  # fmt: skip
def test_go_decoder_messages(body: bytes, message: str) -> None:
    with pytest.raises(gojson.DecodeError) as caught:
        gojson.decode_struct(body, "api.GenerateRequest", {"model": "string", "stream": "*bool"})
    assert str(caught.value) == message


def test_decoder_ignores_trailing_bytes_and_nulls() -> None:
    fields = {"model": "string", "options": "map[string]interface {}"}
    assert gojson.decode_struct(b'{"model":"m","options":null} junk', "api.X", fields) == {
        "model": "m",
        "options": None,
    }


def test_go_durations() -> None:
    assert parse_go_duration("1h30m") == 5400 and parse_go_duration("-1m") == -60
    assert parse_go_duration("1.5s") == 1.5 and parse_go_duration("0") == 0
    for bad, message in (("300", "missing unit in"), ("5 m", "invalid"), ("", "invalid")):
        with pytest.raises(DurationError, match=message):
            parse_go_duration(bad)


def test_keep_alive_values() -> None:
    assert keep_alive_seconds(None) == 300 and keep_alive_seconds(30) == 30
    assert keep_alive_seconds(-1) == math.inf and keep_alive_seconds("-5m") == math.inf
    assert keep_alive_seconds("0") == 0
    with pytest.raises(DurationError):
        keep_alive_seconds(True)


def test_rfc3339nano_trims_like_go() -> None:
    assert rfc3339nano(0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1.5) == "1970-01-01T00:00:01.5Z"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("", True),
        ("localhost", True),
        ("LOCALHOST:80", True),
        ("x.internal", True),
        ("192.168.1.9:11434", True),
        ("0.0.0.0", True),
        ("::1", True),
        ("[fd00::1]:80", True),
        ("myhost", True),
        ("example.com", False),
        ("1.1.1.1:11434", False),
        ("localhost.evil.com", False),
    ],
)
def test_host_guard(host: str, allowed: bool) -> None:
    assert host_allowed(host, hostname="myhost") is allowed


def test_port_stripping_and_listener_kind() -> None:
    assert strip_port("[::1]:80") == "::1" and strip_port("::1") == "::1" and strip_port("a:1") == "a"
    assert is_loopback_listener("127.0.0.1") and is_loopback_listener("::1")
    assert not is_loopback_listener("0.0.0.0")


def test_model_names() -> None:
    assert names.display_name("llama3.2") == "llama3.2:latest"
    assert names.display_name("registry.ollama.ai/library/x:1") == "x:1"
    assert names.display_name("user/model") == "user/model:latest"
    assert names.display_name("hf.co/org/m:Q4") == "hf.co/org/m:Q4"
    assert names.display_name("a/b/c/d") is None and names.display_name("") is None
    assert names.full_name("m:latest") == "registry.ollama.ai/library/m:latest"


def test_knobs_headers_win_and_flags_hit_work_routes_only() -> None:
    settings = Settings(tokens=5, delay_ms=100, fail=True, die_after=3)
    work = resolve(settings, {}, work_route=True)
    assert (work.tokens, work.delay_s, work.fail_status, work.die_after) == (5, 0.1, 500, 3)
    probe = resolve(settings, {}, work_route=False)
    assert probe.delay_s == 0 and probe.fail_status is None
    custom = resolve(settings, {"x-sim-fail": "0", "x-sim-tokens": "7", "x-sim-rate": "10"}, work_route=True)
    assert custom.fail_status is None and custom.tokens == 7 and custom.interval_s == 0.1
    with pytest.raises(KnobError):
        resolve(settings, {"x-sim-chunk-size": "0"}, work_route=True)


def test_ps_sorts_by_expiry_and_drops_unloaded() -> None:
    catalog = Catalog.from_names(["a", "b", "c"], loaded=["c"])
    catalog.touch(catalog.find("a"), 60)
    catalog.touch(catalog.find("b"), 600)
    loaded = json.loads(catalog.ps_body())["models"]
    assert [m["name"] for m in loaded] == ["c:latest", "b:latest", "a:latest"]
    assert loaded[0]["expires_at"].startswith(time.strftime("%Y", time.gmtime(time.time() + FOREVER_S)))
    catalog.touch(catalog.find("b"), 0)
    assert [m["name"] for m in json.loads(catalog.ps_body())["models"]] == ["c:latest", "a:latest"]
