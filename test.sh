#!/usr/bin/env bash
# Installs everything the tests need (Python packages, and Debian packages when missing), then runs
# ruff, the test suite and the benchmark smoke run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test,redis,native]'

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v slowhttptest >/dev/null || missing+=(slowhttptest)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v cc >/dev/null || missing+=(gcc)  # mypyc's C, and Python's headers for it
.venv/bin/python -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' ||
  missing+=(python3-dev)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true

echo "== ruff"
.venv/bin/ruff check .

echo "== compiling the request path (fortress.native)"
mkdir -p build
.venv/bin/python -m fortress.build_native >build/native.log 2>&1 || { tail -40 build/native.log; exit 1; }
tail -1 build/native.log

echo "== pytest: compiled"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

# Again on the Python sources of the compiled modules (fortress.native), what runs where there is no C
# compiler: the tests that drive those modules most directly (~2.5 min; the whole suite twice would take
# ~25), or the arguments given.
echo "== pytest: pure Python (FORTRESS_PURE=1)"
pure=(tests/pipeline tests/proxy tests/routing tests/backends tests/translate tests/auto
  tests/bench/test_bench_profile.py tests/security/test_http_parsing.py tests/security/test_head_limit.py
  tests/security/test_validation.py)
[ $# -eq 0 ] || pure=("$@")
FORTRESS_PURE=1 .venv/bin/python -m pytest -q -p no:cacheprovider "${pure[@]}"

if [ -z "${FORTRESS_SKIP_BENCH:-}" ]; then
  echo "== benchmark smoke run"
  .venv/bin/python -m bench.run --smoke
fi
