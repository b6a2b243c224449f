#!/usr/bin/env bash
# The main job. Today: the core's convergence demo, then Postgres as the
# source of truth (a throwaway cluster the demo starts itself, the
# migrations, two replicas pushing through apply_ops, the restore rule).
# The sync server and the CLI demo arrive with their issues (see README).
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
