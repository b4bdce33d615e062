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
.venv/bin/python -m pip install --quiet -e '.[test,redis]'

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v slowhttptest >/dev/null || missing+=(slowhttptest)
command -v systemd-analyze >/dev/null || missing+=(systemd)
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

echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"

if [ -z "${FORTRESS_SKIP_BENCH:-}" ]; then
  echo "== benchmark smoke run"
  .venv/bin/python -m bench.run --smoke
fi
