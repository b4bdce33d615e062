#!/usr/bin/env bash
# Fortress in one command: creates .venv, installs, initialises the database, starts proxy + admin.
#   ./run.sh           uses ./config.toml (an Ollama at 127.0.0.1:11434)
#   ./run.sh --demo    also starts the Ollama simulator in place of the first local backend of the
#                      config (127.0.0.1:11434 by default), so you can try everything without Ollama
# Environment: FORTRESS_CONFIG (config path, default ./config.toml).
set -euo pipefail
cd "$(dirname "$0")"

demo=0
for arg in "$@"; do
  case "$arg" in
    --demo) demo=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $arg (try --demo)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "run.sh: Python 3.11 or newer is needed (found: $("$python" --version 2>&1))" >&2
  exit 1
fi
stamp=.venv/.fortress-installed
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv"
  "$python" -m venv .venv
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing Fortress into .venv (first run takes a minute)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[native]'
  touch "$stamp"
fi
# the request path compiled with mypyc (about half its CPU; README "Compiled request path"): a no-op when
# current, and on failure (no C compiler) Fortress runs its Python sources
mkdir -p build
if ! .venv/bin/python -m fortress.build_native >build/native.log 2>&1; then
  echo "run.sh: the request path could not be compiled (see build/native.log); running pure Python" >&2
fi
fortress=.venv/bin/fortress

config=${FORTRESS_CONFIG:-./config.toml}
export FORTRESS_CONFIG="$config"  # every command below, and the ones printed, use this file

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ "$demo" = 1 ]; then
  # The simulator stands in for the first backend on this machine, so the demo uses the same config
  # and database as a normal run and every command in README works as printed after either.
  read -r sim_host sim_port < <(.venv/bin/python - "$config" <<'PY' || true
import sys
from urllib.parse import urlsplit
from fortress.config import load
for b in load(sys.argv[1]).backends:
    u = urlsplit(b.url)
    if u.scheme == "http" and u.hostname in ("127.0.0.1", "localhost", "::1"):
        print(u.hostname, u.port or 80)
        break
PY
)
  if [ -z "${sim_port:-}" ]; then
    echo "run.sh: --demo needs a backend on this machine (http://127.0.0.1:PORT) in $config" >&2
    exit 1
  fi
  if (exec 3<>"/dev/tcp/$sim_host/$sim_port") 2>/dev/null; then
    echo "something already answers on $sim_host:$sim_port (a real Ollama?): the demo uses it"
  else
    echo "starting the Ollama simulator on $sim_host:$sim_port"
    "$fortress" sim --host "$sim_host" --port "$sim_port" --rate 40 &
    pids+=($!)
  fi
fi

"$fortress" init

proxy=$(sed -n 's/^listen = "\([^"]*\)".*/\1/p' "$config" | sed -n 1p)
admin=$(sed -n 's/^listen = "\([^"]*\)".*/\1/p' "$config" | sed -n 2p)
cat <<MSG

  Fortress proxy:  http://${proxy:-127.0.0.1:8080}   (point Ollama clients here)
  Fortress admin:  http://${admin:-127.0.0.1:8081}   (log in with the admin account above)

  Create a key:    $fortress user add alice
                   $fortress key create --user alice --rate 600/1m
  Try it:          curl http://${proxy:-127.0.0.1:8080}/api/tags -H "Authorization: Bearer fk_..."
  (config: $config)

MSG
"$fortress" run &
pids+=($!)
wait "${pids[-1]}"
