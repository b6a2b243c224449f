#!/usr/bin/env bash
# Installs Debian's `postgresql` package when its server binaries are missing.
# Tests and the dev server start their own throwaway clusters from these
# binaries (initdb + pg_ctl); the system service is not needed.
set -euo pipefail
log() { printf '[ensure-postgres] %s\n' "$*" >&2; }

if [[ -n "${ARBOR_PG_BIN:-}" && -x "${ARBOR_PG_BIN}/initdb" ]] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "postgres binaries present"
  exit 0
fi
command -v apt-get >/dev/null 2>&1 || { log "apt-get not found: install PostgreSQL >= 15 and set ARBOR_PG_BIN"; exit 1; }
SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo -n)
log "installing postgresql with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq </dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends postgresql </dev/null >/dev/null
# The package may start the distribution's cluster; tests do not use it.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
log "installed"
