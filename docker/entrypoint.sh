#!/bin/sh
# Fortress container entrypoint. On the first start it writes $FORTRESS_HOME/config.toml from the
# environment and creates the database with an admin account; then it runs the given fortress
# command (default `run`: the proxy and the admin). Runs outside Docker too (tests do).
#   FORTRESS_HOME                  config and database directory (default /data, the volume)
#   FORTRESS_BACKEND_URL           the Ollama server (default http://ollama:11434)
#   FORTRESS_PROXY_PORT            proxy port on all interfaces (default 8080)
#   FORTRESS_ADMIN_PORT            admin port on all interfaces (default 8081)
#   FORTRESS_ADMIN_USER            admin account name (default admin)
#   FORTRESS_ADMIN_PASSWORD_FILE   a file holding its password (a Docker secret), or
#   FORTRESS_ADMIN_PASSWORD        the password itself; used on the first start only. With neither,
#                                  a password is generated and printed once in the log.
set -eu
home=${FORTRESS_HOME:-/data}
export FORTRESS_CONFIG="${FORTRESS_CONFIG:-$home/config.toml}"
umask 077

if [ ! -f "$FORTRESS_CONFIG" ]; then
  mkdir -p "$(dirname "$FORTRESS_CONFIG")"
  cat >"$FORTRESS_CONFIG" <<TOML
# Written on the container's first start; edit it on the volume and restart the container.
[proxy]
listen = "0.0.0.0:${FORTRESS_PROXY_PORT:-8080}"
[admin]
listen = "0.0.0.0:${FORTRESS_ADMIN_PORT:-8081}"
[database]
path = "$home/fortress.db"
[[backends]]
name = "ollama"
url = "${FORTRESS_BACKEND_URL:-http://ollama:11434}"
TOML
  echo "fortress-entrypoint: wrote $FORTRESS_CONFIG"
fi

password=""
if [ -n "${FORTRESS_ADMIN_PASSWORD_FILE:-}" ]; then
  password=$(cat "$FORTRESS_ADMIN_PASSWORD_FILE")
elif [ -n "${FORTRESS_ADMIN_PASSWORD:-}" ]; then
  password=$FORTRESS_ADMIN_PASSWORD
fi
user=${FORTRESS_ADMIN_USER:-admin}
database=$(python -m fortress.home --database)
if [ ! -s "$database" ] && [ -n "$password" ]; then
  printf '%s\n' "$password" | fortress init --admin-user "$user" --admin-password-stdin
else
  # creates or migrates the database; without an admin yet it generates a password and prints it once
  fortress init --admin-user "$user"
fi

[ $# -gt 0 ] || set -- run
case "$1" in
  run|serve|admin|init|user|key|backend|doctor|backup|restore|cert) exec fortress "$@" ;;
  *) exec "$@" ;;
esac
