"""Ollama-specific validation: name grammar, registries, cloud, digests, create/pull/push/copy, clamping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fortress.pipeline.validate import (
    Reject,
    blob_digest_from_path,
    check_digest,
    check_model_name,
    clamp_options,
    drop_insecure,
    looks_like_zip,
    parse_go_duration,
    validate_body,
)

D = "sha256:" + "ab" * 32
REG = ("registry.ollama.ai",)


def validate(path: str, body: Any, registries: tuple[str, ...] = REG, cloud: bool = False) -> Reject | None:
    return validate_body(path, body, allowed_registries=registries, allow_cloud=cloud)


# ---- digests -------------------------------------------------------------------------------------


def test_digest_grammar() -> None:
    assert check_digest(D) is None
    for bad in (
        "sha256-" + "ab" * 32,
        "sha256:" + "AB" * 32,
        "sha256:" + "ab" * 31,
        D + "0",
        "",
        None,
        5,
        "sha512:" + "ab" * 64,
        "sha256:../../etc/passwd",
        D + "\n",
    ):
        reject = check_digest(bad)
        assert reject is not None and reject.status == 400, bad


def test_blob_digest_from_path() -> None:
    assert blob_digest_from_path("/api/blobs/" + D) == D
    assert blob_digest_from_path(D) == D
    assert blob_digest_from_path("/api/blobs/sha256%3A" + "ab" * 32) == D
    assert blob_digest_from_path("/api/blobs/" + D + "?x=1") == D


@pytest.mark.parametrize(
    "raw",
    [
        "../../etc/passwd",
        "%2e%2e%2fetc%2fpasswd",
        "sha256:..%2F..%2Fx",
        "..%5cx",
        D + "/x",
        D + "%2F",
        "sha256%3A" + "AB" * 32,
        "%ff%fe",
        "%252e%252e",
        "",
    ],
)
def test_blob_digest_from_path_refuses(raw: str) -> None:
    result = blob_digest_from_path("/api/blobs/" + raw)
    assert isinstance(result, Reject) and result.status == 400


def test_traversal_message_names_the_cause() -> None:
    result = blob_digest_from_path("%2e%2e%2fetc")
    assert isinstance(result, Reject) and "'..'" in result.message


# ---- model names ---------------------------------------------------------------------------------

GOOD_NAMES = [
    "llama3",
    "llama3.2:1b",
    "library/llama3:latest",
    "registry.ollama.ai/library/llama3:8b",
    "registry.ollama.ai:443/library/x",
    "my_ns/model-v1.5:q4_K_M",
    "_x",
    "a" * 80,
    "a:" + "b" * 80,
    "h" * 350 + "/ns/m",
]
BAD_NAMES = [
    "",
    "http://evil/rogue/x",
    "evil.tld/../x",
    "a\\b",
    "a/b/c/d",
    "ns.dot/model",
    "-lead",
    ".hidden",
    "a" * 81,
    "a:" + "b" * 81,
    "h" * 351 + "/ns/m",
    "model:",
    "/model",
    "model/",
    "ns/model:t:ag",
    "mo del",
    "modèle",
    "a..b",
    "host:port:1/ns/m",
    "a@sha256:" + "ab" * 32,
    "n:s/model",
    "x" * 10_000,
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names(name: str) -> None:
    assert check_model_name(name, allowed_registries=None, allow_cloud=False) is None


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names(name: str) -> None:
    reject = check_model_name(name, allowed_registries=None, allow_cloud=False)
    assert reject is not None and reject.status == 400, name
    assert len(reject.message) < 200  # a huge name is not echoed back


@pytest.mark.parametrize("name", [None, 3, ["llama3"], {"a": 1}])
def test_non_string_name(name: object) -> None:
    reject = check_model_name(name, allowed_registries=None, allow_cloud=False)
    assert reject == Reject(400, "model name must be a string")


def test_registry_allow_list_applies_to_explicit_and_default_hosts() -> None:
    assert check_model_name("llama3", allowed_registries=REG, allow_cloud=False) is None
    assert check_model_name("Registry.Ollama.AI/library/x", allowed_registries=REG, allow_cloud=False) is None
    reject = check_model_name("evil.tld/rogue/x", allowed_registries=REG, allow_cloud=False)
    assert reject is not None and reject.status == 403 and "evil.tld" in reject.message
    mine = ["Mirror.Example:5000"]
    assert check_model_name("mirror.example:5000/ns/m", allowed_registries=mine, allow_cloud=False) is None
    reject = check_model_name("llama3", allowed_registries=mine, allow_cloud=False)
    assert reject is not None and reject.status == 403  # bare names would go to registry.ollama.ai


@pytest.mark.parametrize("name", ["gpt-oss:120b-cloud", "glm-4.6:cloud", "GLM:CLOUD", "ns/x-cloud"])
def test_cloud_models_refused_unless_allowed(name: str) -> None:
    reject = check_model_name(name, allowed_registries=None, allow_cloud=False)
    assert reject is not None and reject.status == 403 and "cloud" in reject.message
    assert check_model_name(name, allowed_registries=None, allow_cloud=True) is None


def test_cloudy_but_local_names_pass() -> None:
    assert check_model_name("cloudy:latest", allowed_registries=None, allow_cloud=False) is None
    assert check_model_name("cloud", allowed_registries=None, allow_cloud=False) is None


# ---- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/pull", "/api/push"])
def test_pull_push(path: str) -> None:
    assert validate(path, {"model": "llama3"}) is None
    assert validate(path, {"name": "llama3", "stream": False, "insecure": False}) is None
    # `insecure: true` to an allow-listed registry passes validation; drop_insecure then removes it
    assert validate(path, {"model": "llama3", "insecure": True}) is None
    assert validate(path, {"model": "attacker.tld/r/x", "insecure": True}).status == 403  # type: ignore[union-attr]
    assert validate(path, {"model": "llama3", "insecure": "yes"}).status == 400  # type: ignore[union-attr]
    assert validate(path, {"name": "attacker.tld/rogue/x"}).status == 403  # type: ignore[union-attr]
    assert validate(path, {"name": "http://attacker.tld/rogue/x"}).status == 400  # type: ignore[union-attr]
    # both fields are checked: a clean `model` cannot smuggle a bad `name`
    assert validate(path, {"model": "llama3", "name": "attacker.tld/r/x"}).status == 403  # type: ignore[union-attr]
    assert validate(path, {}) == Reject(400, "model is required")
    assert validate(path, {"model": 7}).status == 400  # type: ignore[union-attr]
    assert validate(path, {"model": "x:cloud"}).status == 403  # type: ignore[union-attr]


def test_drop_insecure_only_on_pull_and_push() -> None:
    for path in ("/api/pull", "/api/push"):
        body = {"model": "llama3", "insecure": True, "stream": True}
        assert drop_insecure(path, body) and body == {"model": "llama3", "stream": True}
        untouched = {"model": "llama3", "insecure": False}
        assert not drop_insecure(path, untouched) and untouched == {"model": "llama3", "insecure": False}
    other = {"model": "llama3", "insecure": True}
    assert not drop_insecure("/api/generate", other) and other["insecure"] is True


def test_copy_destination_must_be_allow_listed() -> None:
    assert validate("/api/copy", {"source": "private", "destination": "backup:v1"}) is None
    # the source may be any local name, even one pulled from elsewhere
    assert validate("/api/copy", {"source": "mirror.example/ns/m", "destination": "m2"}) is None
    theft = validate("/api/copy", {"source": "private", "destination": "attacker.tld/ns/m"})
    assert theft is not None and theft.status == 403
    assert validate("/api/copy", {"source": "../x", "destination": "y"}).status == 400  # type: ignore[union-attr]
    assert validate("/api/copy", {"source": "x"}).status == 400  # type: ignore[union-attr]


def test_create() -> None:
    ok = {
        "model": "mine",
        "from": "llama3",
        "files": {"model.gguf": D, "sub/dir/a.bin": D},
        "adapters": {"lora.gguf": D},
        "quantize": "q4_K_M",
        "system": "be nice",
    }
    assert validate("/api/create", ok) is None
    for bad, status in [
        ({"model": "mine", "path": "/etc/shadow"}, 400),
        ({"model": "mine", "modelfile": "FROM /dev/random"}, 400),
        ({"model": "mine", "from": "attacker.tld/ns/m"}, 403),  # implicit pull
        ({"model": "mine", "from": "x:cloud"}, 403),
        ({"model": "mine", "from": "../../etc"}, 400),
        ({"model": "mine", "files": {"model.gguf": "sha256:../../x"}}, 400),
        ({"model": "mine", "files": {"/etc/passwd": D}}, 400),
        ({"model": "mine", "files": {"../x": D}}, 400),
        ({"model": "mine", "files": {"a//b": D}}, 400),
        ({"model": "mine", "files": {"a\\b": D}}, 400),
        ({"model": "mine", "files": {"./a": D}}, 400),
        ({"model": "mine", "files": ["a"]}, 400),
        ({"model": "mine", "draft_files": {"../../etc/ld.so.preload": D}}, 400),
        ({"model": "mine", "draft_files": {"draft.gguf": "sha256:../x"}}, 400),
        ({"model": "mine", "adapters": {"a": "sha256-" + "ab" * 32}}, 400),
        ({"model": "mine", "from": "llama3", "remote_host": "http://evil"}, 403),
        ({"from": "llama3"}, 400),
        ({"model": "bad name", "from": "llama3"}, 400),
    ]:
        reject = validate("/api/create", bad)
        assert reject is not None and reject.status == status, bad


@pytest.mark.parametrize("path", ["/api/delete", "/api/show"])
def test_delete_show(path: str) -> None:
    assert validate(path, {"model": "llama3"}) is None
    assert validate(path, {"name": "mirror.example/ns/m"}) is None  # local names need no registry check
    assert validate(path, {"name": "a/../b"}).status == 400  # type: ignore[union-attr]
    assert validate(path, {}).status == 400  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "path",
    [
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
    ],
)
def test_inference_routes(path: str) -> None:
    assert validate(path, {"model": "llama3.2:1b", "prompt": "hi"}) is None
    assert validate(path, {"model": "openai/gpt-4o-mini"}) is None
    assert validate(path, {"model": "any.host/ns/m"}) is None  # no pull happens here
    assert validate(path, {"model": "x:cloud"}).status == 403  # type: ignore[union-attr]
    assert validate(path, {"model": "x:cloud"}, cloud=True) is None
    assert validate(path, {"model": "a\\b"}).status == 400  # type: ignore[union-attr]
    assert validate(path, {"prompt": "hi"}) == Reject(400, "model is required")


def test_other_paths_and_shapes() -> None:
    assert validate("/api/tags", {}) is None
    assert validate("/api/generate", ["not", "a", "dict"]) == Reject(
        400, "request body must be a JSON object"
    )


# ---- clamping ------------------------------------------------------------------------------------


def clamp(
    body: dict[str, Any],
    path: str = "/api/generate",
    ctx: int | None = 4096,
    predict: int | None = 256,
    keep: int | None = 600,
) -> bool:
    return clamp_options(body, path=path, max_num_ctx=ctx, max_num_predict=predict, max_keep_alive_s=keep)


def test_clamp_lowers_what_exceeds_caps() -> None:
    body = {
        "model": "m",
        "options": {"num_ctx": 131072, "num_predict": 100000, "temperature": 0.1},
        "keep_alive": "24h",
    }
    assert clamp(body)
    assert body == {
        "model": "m",
        "options": {"num_ctx": 4096, "num_predict": 256, "temperature": 0.1},
        "keep_alive": 600,
    }


def test_clamp_leaves_values_within_caps_untouched() -> None:
    body = {"model": "m", "options": {"num_ctx": 2048, "num_predict": 10}, "keep_alive": "5m"}
    before = json.dumps(body)
    assert not clamp(body)
    assert json.dumps(body) == before


def test_clamp_inserts_num_predict_on_generate_and_chat_only() -> None:
    for path in ("/api/generate", "/api/chat"):
        body: dict[str, Any] = {"model": "m"}
        assert clamp(body, path)
        assert body["options"] == {"num_predict": 256}
    body = {"model": "m"}
    assert not clamp(body, "/api/embed")
    assert "options" not in body


@pytest.mark.parametrize("value", [-1, -2, 1e12, float("inf"), float("nan")])
def test_clamp_unlimited_num_predict(value: float) -> None:
    body = {"options": {"num_predict": value}}
    assert clamp(body)
    assert body["options"]["num_predict"] == 256


@pytest.mark.parametrize("value", [-1, 0, 10**9, float("nan")])
def test_clamp_num_ctx_out_of_range(value: float) -> None:
    body = {"options": {"num_ctx": value}}
    assert clamp(body)
    assert body["options"]["num_ctx"] == 4096


@pytest.mark.parametrize(
    "value", ["-1", "-1m", -1, -0.5, "1h30m", 3601, "700s", "forever", True, [], "", "1e9h"]
)
def test_clamp_keep_alive(value: object) -> None:
    body = {"keep_alive": value}
    assert clamp(body)
    assert body["keep_alive"] == 600


@pytest.mark.parametrize("value", ["5m", "9m59s", 0, "0", 599.5, "300000ms", ".1h", "-0"])
def test_keep_alive_within_cap(value: object) -> None:
    body = {"keep_alive": value}
    assert not clamp(body, predict=None)
    assert body["keep_alive"] == value


def test_wrong_types_are_left_for_ollama_to_refuse() -> None:
    body = {"options": {"num_ctx": "99999", "num_predict": "x"}}
    assert not clamp(body)


def test_no_caps_no_change() -> None:
    body = {"model": "m", "options": {"num_ctx": 10**6}, "keep_alive": -1}
    assert not clamp(body, ctx=None, predict=None, keep=None)


def test_clamp_openai_routes() -> None:
    body: dict[str, Any] = {"model": "m", "messages": []}
    assert clamp(body, "/v1/chat/completions")
    assert body == {"model": "m", "messages": [], "max_tokens": 256}
    body = {"model": "m", "max_tokens": 100000, "max_completion_tokens": -1}
    assert clamp(body, "/v1/chat/completions")
    assert body["max_tokens"] == 256 and body["max_completion_tokens"] == 256
    body = {"model": "m", "max_completion_tokens": 100}
    assert not clamp(body, "/v1/chat/completions")  # no max_tokens forced next to it
    body = {"model": "m", "input": "x"}
    assert not clamp(body, "/v1/embeddings")
    assert "options" not in body and "max_tokens" not in body


def test_go_durations() -> None:
    assert parse_go_duration("1h30m") == 5400
    assert parse_go_duration("1.5h") == 5400
    assert parse_go_duration("-2m") == -120
    assert parse_go_duration("300ms") == pytest.approx(0.3)
    assert parse_go_duration("2µs") == pytest.approx(2e-6)
    for bad in ("", "5", "m", "1x", "1h 2m", ".s", "+", "1hh"):
        assert parse_go_duration(bad) is None, bad


def test_zip_magic() -> None:
    assert looks_like_zip(b"PK\x03\x04rest")
    assert looks_like_zip(b"PK\x05\x06")
    assert not looks_like_zip(b"GGUF\x03\x00")
    assert not looks_like_zip(b"PK")
    assert not looks_like_zip(b"")
