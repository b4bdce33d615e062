"""Which code runs the request path (fortress.native): the compiled modules when their build is current,
else their Python sources, all of them or none.

Each case imports Fortress in a fresh interpreter, as the proxy would start. The compiled case needs the
build that ./test.sh makes first (`python -m fortress.build_native`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from fortress import native

PROBE = (
    "import fortress, importlib; from fortress.native import MODULES; "
    "print(fortress.MODE); print(*sorted({importlib.import_module(m).__file__[-3:] for m in MODULES}))"
)


def _probe(cwd: Path, **env: str) -> tuple[str, str]:
    """(fortress.MODE, the file endings the set's modules were loaded from) in a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | env
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=environ, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return out[0], out[1]


def test_a_current_build_runs_every_module_of_the_set_compiled() -> None:
    mode, endings = _probe(native.ROOT)
    assert mode == "compiled (mypyc)", f"{mode}: ./test.sh builds it (python -m fortress.build_native)"
    assert endings == ".so"


def test_fortress_pure_runs_the_sources() -> None:
    assert _probe(native.ROOT, FORTRESS_PURE="1") == (f"pure Python ({native.PURE_ENV} is set)", ".py")


def test_a_source_edited_after_the_build_sends_the_whole_set_to_its_sources(tmp_path: Path) -> None:
    """A copy of the built package with one compiled module's source changed: none of the compiled
    modules runs (they call each other directly, so one stale module cannot be mixed with the rest)."""
    shutil.copytree(native.ROOT / "fortress", tmp_path / "fortress")
    assert _probe(tmp_path) == ("compiled (mypyc)", ".so")  # the copy is current as copied
    with (tmp_path / "fortress" / "proxy" / "pool.py").open("a") as fh:
        fh.write("\n# edited after the build\n")
    mode, endings = _probe(tmp_path)
    assert mode.startswith("pure Python (the compiled modules are stale")
    assert endings == ".py"


def test_without_a_build_the_sources_run(tmp_path: Path) -> None:
    shutil.copytree(native.ROOT / "fortress", tmp_path / "fortress")
    (tmp_path / "fortress" / "native.stamp").unlink()  # a build that failed half-way writes none
    mode, endings = _probe(tmp_path)
    assert mode.startswith("pure Python (not compiled")
    assert endings == ".py"
