#!/usr/bin/env bash
# The main job: the core's convergence demo, the Postgres demo (apply_ops and
# the restore rule on a throwaway cluster), then the local server stack:
# `arbor-server dev` starts its own Postgres (kept in .arbor-dev/), creates
# the thoughtspace `demo`, prints an admin token and serves the API until
# Ctrl-C. Set ARBOR_RUN_NO_SERVER=1 to stop after the demos.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}"
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
bash scripts/ensure-postgres.sh
echo "==> the CRDT core: two replicas, a concurrent cross-move, convergence"
cargo run --locked -q -p arbor-shared --example converge
echo
echo "==> Postgres: apply_ops and the restore rule"
cargo run --locked -q -p arbor-sync-server --example postgres_demo
if [[ "${ARBOR_RUN_NO_SERVER:-}" == 1 ]]; then exit 0; fi
echo
echo "==> the sync server with its own Postgres (Ctrl-C to stop)"
exec cargo run --locked -q -p arbor-sync-server --bin arbor-server -- dev
