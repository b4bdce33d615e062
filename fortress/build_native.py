"""`python -m fortress.build_native`: compile the request path's modules with mypyc, in place (see
fortress.native). Nothing to do when the build is current; a failed build leaves Fortress on its
Python sources and says why. Needs the `native` extra (mypy) and a C compiler with Python's headers."""

from __future__ import annotations

import json
import os
import sys

from fortress.native import GROUP, MODULES, ROOT, STAMP, current, fingerprint, source

BUILD_DIR = ROOT / "build" / "mypyc"  # generated C and object files (git-ignored)


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
    os.chdir(ROOT)  # mypyc names each module by its path relative to the current directory
    try:
        # type errors in the modules they import are not the build's business (only the set is compiled)
        paths = ["--follow-imports=silent", *(str(source(m).relative_to(ROOT)) for m in MODULES)]
        extensions = mypycify(paths, group_name=GROUP, target_dir=str(BUILD_DIR))
        # a bare Distribution: setup() would read pyproject.toml, which describes the package, not this
        dist = Distribution({"name": "fortress-native", "ext_modules": extensions})
        command = dist.get_command_obj("build_ext")
        command.inplace = True  # type: ignore[attr-defined]
        command.build_temp = str(BUILD_DIR / "temp")  # type: ignore[attr-defined]
        dist.run_command("build_ext")
    except (SystemExit, Exception) as exc:  # mypy's type errors exit; the C compiler's raise
        print(f"fortress.build_native: the build failed ({exc}); Fortress runs pure Python", file=sys.stderr)
        return 1
    if fingerprint() != expected:
        print("fortress.build_native: a source changed during the build; run it again", file=sys.stderr)
        return 1
    STAMP.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"fortress.build_native: compiled {len(MODULES)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(build())
