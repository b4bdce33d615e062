#!/usr/bin/env bash
# Deletes Fortress's state, after asking: the database (and its WAL), the secrets next to it
# (credential key, admin session secret), the limiter's and the metrics' shared tables, certificates
# uploaded in the admin, and .venv. Keeps config.toml and your own certificate files.
#   ./reset.sh                asks first (needs a terminal)
#   ./reset.sh --yes          deletes without asking, for scripts
#   ./reset.sh --keep-venv    leaves .venv alone
#   ./reset.sh --config PATH  another config (default ./config.toml, or $FORTRESS_CONFIG)
# Without a terminal and without --yes it deletes nothing. It refuses while Fortress is running.
set -euo pipefail
cd "$(dirname "$0")"

yes=0
keep_venv=0
config_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --yes|-y) yes=1 ;;
    --keep-venv) keep_venv=1 ;;
    --config) [ $# -ge 2 ] || { echo "reset.sh: --config needs a path" >&2; exit 2; }; config_args=(--config "$2"); shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "reset.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# fortress/home.py knows where the files are; it needs only the standard library, so it runs
# with .venv's Python or, when .venv is already gone, with python3.
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
home() { PYTHONPATH=. "$python" -m fortress.home "${config_args[@]}" "$@"; }

running=$(home --in-use)
if [ -n "$running" ]; then
  echo "reset.sh: Fortress is running; stop it first. Using the database:" >&2
  echo "$running" >&2
  exit 1
fi

targets=()
while IFS= read -r path; do
  [ -n "$path" ] && targets+=("$path")
done < <(home)
if [ "$keep_venv" = 0 ] && [ -e .venv ]; then
  targets+=("$PWD/.venv")
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "reset.sh: nothing to delete"
  exit 0
fi

echo "reset.sh will delete:"
printf '  %s\n' "${targets[@]}"
if [ "$yes" = 0 ]; then
  if [ ! -t 0 ]; then
    echo "reset.sh: no terminal to ask on, so nothing was deleted (run with --yes to delete without asking)" >&2
    exit 1
  fi
  read -r -p "Delete these for good? Type yes to confirm: " answer
  if [ "$answer" != "yes" ]; then
    echo "reset.sh: nothing deleted"
    exit 1
  fi
fi
rm -rf -- "${targets[@]}"
echo "reset.sh: deleted. ./run.sh sets Fortress up again from scratch."
