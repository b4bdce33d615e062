"""Which code runs the request path: the modules compiled to C by mypyc, or their Python sources.

`python -m fortress.build_native` compiles MODULES into extension modules beside their sources
(./run.sh and ./test.sh run it after installing). Compiled, W1's request costs about half the CPU in
Python that the interpreted one does (bench/RESULTS.md, issue 14 step 9). The sources stay the
reference: test.sh runs the tests on both, and Fortress runs the sources whenever the build is missing,
failed half-way, was made for another Python, or is older than they are.

A build ends by writing STAMP: the Python it was made for, and each compiled source's size and
modification time. Importing `fortress` compares it with the sources (one stat call each). On any
difference (an edit since the build, a checkout of another commit) every module of the set is loaded
from its source: compiled modules call each other's functions directly, so a stale one cannot be mixed
with fresh ones. FORTRESS_PURE=1 asks for the sources too (the pure-Python test pass, a comparison).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

# The modules that run the bytecodes of a small request: W1's and its chat variants (named, translated
# for a provider, model "auto"; bench.profile --workload bytecodes --variant ...), and those whose
# classes extend theirs (an interpreted class cannot extend a compiled one: translate.embeddings,
# .relay). The backend kinds (backends.ollama, .openai: a few dozen bytecodes) stay interpreted: a new
# kind may extend them (tests/proxy/upper.py does).
MODULES = (
    "fortress.backends.kind",
    "fortress.pipeline.bruteforce",
    "fortress.pipeline.chain",
    "fortress.pipeline.jsonbody",
    "fortress.pipeline.validate",
    "fortress.proxy.exchange",
    "fortress.proxy.outbox",
    "fortress.proxy.pool",
    "fortress.proxy.protocol",
    "fortress.proxy.request",
    "fortress.proxy.upstream",
    "fortress.proxy.worker",
    "fortress.routing.auto",
    "fortress.routing.choose",
    "fortress.routing.inventory",
    "fortress.translate.base",
    "fortress.translate.embeddings",
    "fortress.translate.generation",
    "fortress.translate.relay",
    "fortress.translate.requests",
)
GROUP = "fortress.native"  # the set's shared library: fortress/native__mypyc.<extension suffix>
ROOT = Path(__file__).resolve().parent.parent
STAMP = ROOT / "fortress" / "native.stamp"
PURE_ENV = "FORTRESS_PURE"


def source(module: str) -> Path:
    return ROOT / (module.replace(".", "/") + ".py")


def fingerprint() -> dict[str, object]:
    """What a build is valid for: this interpreter, and each source's size and modification time (what
    Python's own .pyc files are checked by; hashing would load OpenSSL into every Fortress process)."""
    stats = {m: source(m).stat() for m in MODULES}
    return {
        "python": sys.implementation.cache_tag,
        "sources": {m: [st.st_size, st.st_mtime_ns] for m, st in stats.items()},
    }


def current() -> bool:
    """Whether a finished build matches this interpreter and today's sources."""
    try:
        return json.loads(STAMP.read_text()) == fingerprint()
    except (OSError, ValueError):
        return False


class _Sources:
    """Finds the modules of the set as their .py files, ahead of the extension modules beside them (a
    meta path finder by its method: importlib.abc would import importlib.resources and more into every
    Fortress process, the usage writer's too)."""

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        return importlib.util.spec_from_file_location(name, source(name)) if name in MODULES else None


def choose() -> str:
    """Install the source finder unless the build is current; says which code runs (the proxy logs it)."""
    if os.environ.get(PURE_ENV):
        mode = f"pure Python ({PURE_ENV} is set)"
    elif current():
        return "compiled (mypyc)"
    elif STAMP.exists():
        mode = "pure Python (the compiled modules are stale: python -m fortress.build_native)"
    else:
        mode = "pure Python (not compiled: python -m fortress.build_native)"
    sys.meta_path.insert(0, _Sources())
    return mode
