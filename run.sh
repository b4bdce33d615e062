#!/usr/bin/env bash
# Fortress in one command: creates .venv, installs, initialises the database, starts proxy + admin.
#   ./run.sh           uses ./config.toml (an Ollama at 127.0.0.1:11434)
#   ./run.sh --demo    also starts the Ollama simulator as the backend, so you can try everything
# Environment: FORTRESS_CONFIG (config path), FORTRESS_DEMO_DIR (demo home, default ./data/demo),
#              FORTRESS_DEMO_PORTS ("PROXY ADMIN SIM", default "8080 8081 11435").
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
  .venv/bin/python -m pip install --quiet -e .
  touch "$stamp"
fi
fortress=.venv/bin/fortress

pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

if [ "$demo" = 1 ]; then
  home=${FORTRESS_DEMO_DIR:-./data/demo}
  read -r proxy_port admin_port sim_port <<<"${FORTRESS_DEMO_PORTS:-8080 8081 11435}"
  mkdir -p "$home"
  export FORTRESS_CONFIG="$home/config.toml"
  if [ ! -f "$FORTRESS_CONFIG" ]; then
    cat >"$FORTRESS_CONFIG" <<TOML
# Demo configuration written by ./run.sh --demo: the Ollama simulator is the only backend.
[proxy]
listen = "127.0.0.1:$proxy_port"
[admin]
listen = "127.0.0.1:$admin_port"
[database]
path = "fortress.db"
[[backends]]
name = "demo-sim"
url = "http://127.0.0.1:$sim_port"
TOML
  fi
  "$fortress" sim --port "$sim_port" --rate 40 &
  pids+=($!)
fi
config=${FORTRESS_CONFIG:-./config.toml}

"$fortress" init --config "$config"

proxy=$(sed -n 's/^listen = "\([^"]*\)".*/\1/p' "$config" | sed -n 1p)
admin=$(sed -n 's/^listen = "\([^"]*\)".*/\1/p' "$config" | sed -n 2p)
cat <<MSG

  Fortress proxy:  http://${proxy:-127.0.0.1:8080}   (point Ollama clients here)
  Fortress admin:  http://${admin:-127.0.0.1:8081}   (log in with the admin account above)

  Create a key:    $fortress user add alice --config $config
                   $fortress key create --user alice --config $config
  Try it:          curl http://${proxy:-127.0.0.1:8080}/api/tags -H "Authorization: Bearer <key>"

MSG
"$fortress" run --config "$config" &
pids+=($!)
wait "${pids[-1]}"
