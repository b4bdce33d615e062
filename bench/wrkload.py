"""Request/response load with wrk: a Lua script for the request and a JSON summary line back."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.procs import pinned

_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = {auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # socket errors plus responses with status >= 400
    p50_ms: float
    p99_ms: float
    p999_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def lua_string(text: str) -> str:
    """A Lua long-bracket literal that cannot be closed by the text itself."""
    level = 0
    while "]" + "=" * level + "]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def script(body: str, key: str) -> str:
    return _SCRIPT.format(body=lua_string(body), auth=lua_string(f"Bearer {key}"))


def parse(stdout: str) -> WrkResult:
    """Read the summary line our done() hook printed; a missing line means wrk failed."""
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            d = json.loads(line[len("WRK_JSON ") :])
            errors = d["connect"] + d["read"] + d["write"] + d["status"] + d["timeout"]
            return WrkResult(
                requests=d["requests"],
                seconds=d["duration_us"] / 1e6,
                errors=errors,
                p50_ms=d["p50_us"] / 1000,
                p99_ms=d["p99_us"] / 1000,
                p999_ms=d["p999_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary:\n{stdout[-2000:]}")


def ensure_wrk() -> str:
    """Path to wrk, installing the Debian package when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if shutil.which("sudo") is None else ["sudo", "-n"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "wrk"], check=True)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it")
    return found


def run_wrk(
    url: str, body: str, key: str, connections: int, seconds: int, cpu: str | None, workdir: Path
) -> WrkResult:
    """One wrk run (1 thread, keep-alive connections) against url; wrk takes whole seconds."""
    lua = workdir / "wrk_post.lua"
    lua.write_text(script(body, key))
    argv = [
        ensure_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, seconds)}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
        url,
    ]
    done = subprocess.run(pinned(argv, cpu), capture_output=True, text=True, timeout=seconds + 60)
    return parse(done.stdout + done.stderr)
