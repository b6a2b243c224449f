#!/usr/bin/env bash
# Installs moto's S3-compatible server (`moto_server`, from PyPI) into a
# venv under ~/.cache/arbor/moto when it is missing, and prints the path of
# its `moto_server` (and nothing else) on stdout. The object-storage backup
# tests (tests/it/s3_backup.rs) start it on a free port; they find it through
# ARBOR_MOTO_SERVER, which scripts/test.sh sets from this output, or at the
# default venv path.
#
#   export ARBOR_MOTO_SERVER="$(bash scripts/ensure-moto.sh)"
set -euo pipefail
log() { printf '[ensure-moto] %s\n' "$*" >&2; }

MOTO_VERSION=5.2.1
venv="${ARBOR_MOTO_VENV:-$HOME/.cache/arbor/moto}"
server="$venv/bin/moto_server"

if [[ -x "$server" ]] && "$venv/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  log "moto $MOTO_VERSION present in $venv"
  printf '%s\n' "$server"
  exit 0
fi

python="$(command -v python3 || true)"
if [[ -z "$python" ]] || ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || { log "python3 with venv is missing: install it, then run this again"; exit 1; }
  SUDO=()
  [[ "$(id -u)" == 0 ]] || SUDO=(sudo -n)
  log "installing python3-venv with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -qq </dev/null
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends python3 python3-venv </dev/null >/dev/null
  python=/usr/bin/python3
fi

log "installing moto[server]==$MOTO_VERSION into $venv"
rm -rf "$venv"
"$python" -m venv "$venv" >&2
"$venv/bin/python" -m pip install --quiet "moto[server]==$MOTO_VERSION" >&2
[[ -x "$server" ]] || { log "pip installed moto but $server is missing"; exit 1; }
log "installed"
printf '%s\n' "$server"
