#!/usr/bin/env bash
# Installs Debian's `postgresql` package when its server binaries are missing,
# and `openssl` when it is (the TLS tests make their CA and certificates with
# it). Tests and the dev server start their own throwaway clusters from these
# binaries (initdb + pg_ctl); the system service is not needed.
set -euo pipefail
log() { printf '[ensure-postgres] %s\n' "$*" >&2; }

need=()
if [[ -n "${ARBOR_PG_BIN:-}" && -x "${ARBOR_PG_BIN}/initdb" ]] || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  log "postgres binaries present"
else
  need+=(postgresql)
fi
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[[ ${#need[@]} == 0 ]] && exit 0
command -v apt-get >/dev/null 2>&1 || { log "apt-get not found: install ${need[*]} (PostgreSQL >= 15; set ARBOR_PG_BIN)"; exit 1; }
SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo -n)
log "installing ${need[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq </dev/null
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" </dev/null >/dev/null
# The package may start the distribution's cluster; tests do not use it.
if [[ " ${need[*]} " == *" postgresql "* ]]; then ls /usr/lib/postgresql/*/bin/initdb >/dev/null; fi
log "installed"
