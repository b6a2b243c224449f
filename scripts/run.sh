#!/usr/bin/env bash
# The main job. Today: the CRDT core's convergence demo (the server stack
# and CLI demo arrive with their issues; see README).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}"
command -v cargo >/dev/null || { echo "cargo not found: install the Rust toolchain first" >&2; exit 1; }
cargo run --locked -q -p arbor-shared --example converge
