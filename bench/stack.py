"""The targets side by side: one upstream, then direct, nginx and Fortress in front of it.

The "translate" stack compares two routes through one Fortress instead: "raw", a model of an Ollama
upstream (the simulator), relayed as it comes, and "translated", a provider's model `prov/<model>`
(a second simulator, in provider mode) whose OpenAI stream Fortress turns into Ollama's NDJSON. On the
"static" stack Fortress has that provider too, on the static upstream's /v1 (W1t's translated chat).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import nginx
from bench.fortress_proc import VARIANTS, Keys, prepare, start_fortress, twin
from bench.procs import Meter, Service, free_port, start

TARGETS = ("direct", "nginx", "fortress", "fortress-nometrics", "fortress-w2")  # the last two when asked
DEFAULT_TARGETS = TARGETS[:3]
ROUTES = ("raw", "translated")  # the translate stack's targets
PROVIDER = "prov"


@dataclass(frozen=True)
class Cpus:
    """Where things run: the proxy alone on one core, the load client and the upstream on the other."""

    proxy: str | None = "1"
    load: str | None = "0"


@dataclass
class Target:
    name: str
    port: int
    service: Service | None  # the proxy process we measure; None when going direct
    model: str = nginx.MODEL  # the model the streaming workloads ask for

    @property
    def proxy(self) -> Meter | None:
        return None if self.service is None else Meter(self.service.proc.pid)


@dataclass
class Stack:
    upstream: Meter
    keys: Keys
    targets: list[Target] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)

    def close(self) -> None:
        for s in reversed(self.services):
            s.stop()


def _sim(name: str, port: int, cpus: Cpus, workdir: Path, *flags: str) -> Service:
    argv = [sys.executable, "-m", "fortress.sim", "--port", str(port), "--models", nginx.MODEL, *flags]
    return start(name, argv, port, cpus.load, workdir)


def _start_upstream(kind: str, port: int, cpus: Cpus, workdir: Path, nofile: int) -> Service:
    if kind == "static":
        return nginx.start_nginx(
            "upstream",
            nginx.static_upstream_conf(workdir / "upstream", port, nofile),
            port,
            cpus.load,
            workdir,
        )
    return _sim("sim", port, cpus, workdir)


def open_stack(kind: str, names: tuple[str, ...], cpus: Cpus, workdir: Path, nofile: int) -> Stack:
    """Start the upstream ("static" nginx, "sim", or "translate": two simulators) and the proxies in
    names (for "translate": Fortress alone, as both targets); close() stops them all."""
    workdir.mkdir(parents=True, exist_ok=True)
    services: list[Service] = []
    try:
        up_port = free_port()
        up = _start_upstream(kind, up_port, cpus, workdir, nofile)
        services.append(up)
        stack = Stack(upstream=Meter(up.proc.pid), keys=Keys("", ""), services=services)
        if kind == "translate":
            _translate_targets(stack, up, cpus, workdir)
            return stack
        if "direct" in names:
            stack.targets.append(Target("direct", up_port, None))
        if "nginx" in names:
            port = free_port()
            px = nginx.start_nginx(
                "nginx", nginx.proxy_conf(workdir / "nginx", port, up_port, nofile), port, cpus.proxy, workdir
            )
            services.append(px)
            stack.targets.append(Target("nginx", port, px))
        first: Path | None = None
        provider = up_port if kind == "static" else 0  # the static upstream serves a provider's /v1 too
        for name in (n for n in names if n in VARIANTS):
            port = free_port()
            if first is None:
                config, stack.keys = prepare(workdir, port, up_port, provider, name)
                first = config
            else:
                config = twin(first, name, port, up_port, provider)
            fx = start_fortress(config, port, cpus.proxy, workdir, name)
            services.append(fx)
            stack.targets.append(Target(name, port, fx))
        return stack
    except BaseException:
        for s in reversed(services):
            s.stop()
        raise


def _translate_targets(stack: Stack, up: Service, cpus: Cpus, workdir: Path) -> None:
    """A provider-mode simulator beside the Ollama one, and Fortress in front of both."""
    provider = _sim("provider", free_port(), cpus, workdir, "--provider")
    stack.services.append(provider)
    stack.upstream = Meter(up.proc.pid, provider.proc.pid)
    port = free_port()
    config, stack.keys = prepare(workdir, port, up.port, provider_port=provider.port)
    fx = start_fortress(config, port, cpus.proxy, workdir)
    stack.services.append(fx)
    stack.targets += [Target("raw", port, fx), Target("translated", port, fx, f"{PROVIDER}/{nginx.MODEL}")]
