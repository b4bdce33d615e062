"""`python -m fortress.build_native`: compile the request path's modules with mypyc, in place (see
fortress.native). Nothing to do when the build is current; a failed build leaves Fortress on its
Python sources and says why. Needs the `native` extra (mypy) and a C compiler with Python's headers."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from fortress.native import GROUP, MODULES, ROOT, STAMP, current, fingerprint, source

_NOT_SOURCES = shutil.ignore_patterns("*.so", "__pycache__", STAMP.name)


def build() -> int:
    """Compile the set; the stamp is written only once every module is built."""
    if current():
        print("fortress.build_native: the compiled modules are current")
        return 0
    STAMP.unlink(missing_ok=True)
    try:
        from mypyc.build import mypycify
        from setuptools import Distribution
    except ImportError as exc:
        print(f"fortress.build_native: cannot compile ({exc}); install the 'native' extra", file=sys.stderr)
        return 1
    expected = fingerprint()
    try:
        # compiled in a scratch copy of the package, then copied beside the sources: mypy takes the
        # directory above the package as a source root, and an installed Fortress's is site-packages,
        # whose other top-level modules would shadow the ones mypy knows
        with tempfile.TemporaryDirectory(prefix="fortress-native-") as scratch:
            work = Path(scratch)
            shutil.copytree(ROOT / "fortress", work / "fortress", ignore=_NOT_SOURCES)
            os.chdir(work)  # mypyc names each module by its path relative to the current directory
            # type errors in the modules the set imports are not this build's business
            options = ["--follow-imports=silent", f"--cache-dir={work / 'mypy'}"]
            paths = [str(source(m).relative_to(ROOT)) for m in MODULES]
            extensions = mypycify(options + paths, group_name=GROUP, target_dir=str(work / "c"))
            # a bare Distribution: setup() would read pyproject.toml, which describes the package
            dist = Distribution({"name": "fortress-native", "ext_modules": extensions})
            command = dist.get_command_obj("build_ext")
            command.inplace = True  # type: ignore[attr-defined]
            command.build_temp = str(work / "objects")  # type: ignore[attr-defined]
            dist.run_command("build_ext")
            _install(work)
    except (SystemExit, Exception) as exc:  # mypy's type errors exit; the C compiler's raise
        print(f"fortress.build_native: the build failed ({exc}); Fortress runs pure Python", file=sys.stderr)
        return 1
    if fingerprint() != expected:
        print("fortress.build_native: a source changed during the build; run it again", file=sys.stderr)
        return 1
    STAMP.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"fortress.build_native: compiled {len(MODULES)} modules")
    return 0


def _install(work: Path) -> None:
    """The built extensions in place of the last build's (a module that left the set leaves none):
    written aside and renamed, so a running Fortress keeps the files it has mapped."""
    suffix = EXTENSION_SUFFIXES[0]
    for old in (ROOT / "fortress").rglob(f"*{suffix}"):
        old.unlink()
    for built in (work / "fortress").rglob(f"*{suffix}"):
        target = ROOT / built.relative_to(work)
        aside = target.with_name(target.name + ".new")
        shutil.copyfile(built, aside)
        os.replace(aside, target)


if __name__ == "__main__":
    sys.exit(build())
