"""nginx for the benchmarks: a static Ollama-shaped upstream and the reference reverse proxy.

Both run as the current user in one process (`daemon off; master_process off`), so the pid we
measure is the one doing the work; everything nginx writes goes under a private prefix directory.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.procs import Service, start

MODEL = "bench:latest"

TAGS = {
    "models": [
        {
            "name": MODEL,
            "model": MODEL,
            "modified_at": "2026-01-01T00:00:00Z",
            "size": 1000000,
            "digest": "0" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "1B",
                "quantization_level": "Q4_0",
            },
        }
    ]
}

SHOW = {
    "modelfile": "FROM bench\n",
    "parameters": "stop <eos>",
    "template": "{{ .Prompt }}",
    "details": TAGS["models"][0]["details"],
    "model_info": {"general.architecture": "llama", "general.parameter_count": 1000000},
    "capabilities": ["completion"],
    "modified_at": "2026-01-01T00:00:00Z",
}

# A short non-streamed chat answer, as Ollama gives it (W1c, W1a) ...
CHAT = {
    "model": MODEL,
    "created_at": "2026-01-01T00:00:00Z",
    "message": {"role": "assistant", "content": "The quick brown fox jumps"},
    "done": True,
    "done_reason": "stop",
    "total_duration": 50267149,
    "load_duration": 48000000,
    "prompt_eval_count": 15,
    "prompt_eval_duration": 2250000,
    "eval_count": 5,
    "eval_duration": 17149,
}

# ... and as an OpenAI-compatible provider gives it (W1t: Fortress translates it into the answer above).
# The provider's base URL is the static upstream's /v1; it lists its one model at /v1/models.
CHAT_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1767225600,
    "model": MODEL,
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The quick brown fox jumps", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20},
}
V1_MODELS = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}

_COMMON = """daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {nofile}; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{body}
}}
"""


def _json_return(path: str, doc: object) -> str:
    text = json.dumps(doc, separators=(",", ":")).replace("\\", "\\\\")  # nginx unescapes \n
    if "'" in text or "$" in text:  # nginx would read these as quoting or variables
        raise ValueError(f"static body for {path} needs escaping")
    return f"        location = {path} {{ default_type application/json; return 200 '{text}'; }}"


def static_upstream_conf(prefix: Path, port: int, nofile: int) -> str:
    """An Ollama look-alike answering from memory, with an OpenAI-compatible provider under /v1: faster than
    any proxy put in front of it."""
    locations = "\n".join(
        [
            '        location = / { default_type text/plain; return 200 "Ollama is running"; }',
            _json_return("/api/version", {"version": "0.12.0"}),
            _json_return("/api/tags", TAGS),
            _json_return("/api/ps", {"models": []}),
            _json_return("/api/show", SHOW),
            _json_return("/api/chat", CHAT),
            _json_return("/v1/models", V1_MODELS),
            _json_return("/v1/chat/completions", CHAT_COMPLETION),
        ]
    )
    body = f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
{locations}
    }}"""
    return _COMMON.format(prefix=prefix, nofile=nofile, body=body)


def proxy_conf(prefix: Path, port: int, upstream_port: int, nofile: int) -> str:
    """The C reference: proxy_pass with upstream keepalive, unbuffered both ways like Fortress."""
    body = f"""    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive 1024;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        client_max_body_size 0;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host 127.0.0.1:{upstream_port};
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
    }}"""
    return _COMMON.format(prefix=prefix, nofile=nofile, body=body)


def start_nginx(name: str, conf: str, port: int, cpu: str | None, workdir: Path) -> Service:
    """Write conf under workdir/<name>/ and run nginx with that directory as its prefix."""
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(conf)
    argv = ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    return start(name, argv, port, cpu, workdir)
