#!/usr/bin/env bash
# Sets up and runs every check CI runs: format, clippy (-D warnings), the
# README's run command (demos only), the wasm32 build of `shared`, the
# realtime Worker's toolchain and build (its bundle as `wrangler deploy
# --dry-run` makes it, and its tool cache from empty), all
# tests (against Postgres clusters the tests start themselves, the Worker
# in workerd), the browser client built for wasm32 and tested in headless
# Chromium, the cargo-fuzz targets (a short run), and the release-mode
# scaling test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy

step "postgres binaries (tests start their own clusters)"
bash scripts/ensure-postgres.sh

step "cargo fmt --check"
cargo fmt --all --check
cargo fmt --manifest-path worker-realtime/Cargo.toml --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "the README's run command: the demos, two CLI replicas through arbor-server dev, the browser build"
# Before anything else installs the wasm tools, so that a fresh machine runs
# it exactly as a new user would (it failed there once: issue 15).
ARBOR_RUN_NO_SERVER=1 bash scripts/run.sh

step "wasm32-unknown-unknown build of arbor-shared"
bash scripts/build-wasm-shared.sh

step "the realtime Worker: toolchain (cached), clippy, worker-build"
# Clippy checks its Rust natively (it type-checks the same code); the build
# is the wasm32 one workerd runs in the end-to-end tests.
CARGO_TARGET_DIR="$CARGO_TARGET_DIR-worker-native" \
  cargo clippy --locked --manifest-path worker-realtime/Cargo.toml -- -D warnings
bash scripts/build-worker.sh
export ARBOR_WORKER_TOOLS="$(bash scripts/build-worker.sh --tools)"

step "the Worker bundle as \`wrangler deploy\` makes it (--dry-run, the root wrangler.toml)"
bundle="$(mktemp -d)"
CI=true WRANGLER_SEND_METRICS=false \
  "$ARBOR_WORKER_TOOLS/node_modules/.bin/wrangler" deploy --dry-run --outdir "$bundle" --config wrangler.toml </dev/null
if [[ ! -s "$bundle/index.js" ]] || ! ls "$bundle"/*.wasm >/dev/null 2>&1; then
  printf 'wrangler deploy --dry-run wrote no bundle (index.js and its .wasm) to %s\n' "$bundle" >&2
  exit 1
fi
rm -rf "$bundle"

step "the tool cache from empty: build-worker.sh --tools prints its folder and nothing else"
# npm and the shim run from an empty ARBOR_TOOLS; the two cargo-installed
# binaries (minutes to build) are seeded from the warm cache.
fresh_tools="$(mktemp -d)"
versioned="$fresh_tools/$(basename "$ARBOR_WORKER_TOOLS")"
mkdir -p "$versioned/bin"
cp "$ARBOR_WORKER_TOOLS/bin/worker-build" "$ARBOR_WORKER_TOOLS/bin/wasm-bindgen" "$versioned/bin/"
printed="$(ARBOR_TOOLS="$fresh_tools" bash scripts/build-worker.sh --tools 2>/dev/null)"
if [[ "$printed" != "$versioned" || ! -x "$printed/node_modules/.bin/wrangler" ]]; then
  printf 'build-worker.sh --tools from an empty cache printed:\n%s\nexpected only: %s\n' "$printed" "$versioned" >&2
  exit 1
fi
rm -rf "$fresh_tools"

step "moto's S3-compatible server (the object-storage backup tests start it)"
ARBOR_MOTO_SERVER="$(bash scripts/ensure-moto.sh)"
export ARBOR_MOTO_SERVER

step "cargo test --workspace"
cargo test --locked --workspace

step "the browser client: fmt, clippy (wasm32), build, Chromium tests against arbor-server dev"
cargo fmt --manifest-path client-web/Cargo.toml --check
bash scripts/build-web.sh --clippy
cargo build --locked -p arbor-sync-server --bin arbor-server
(cd web && node --test --test-concurrency=1 test/*.test.mjs)

step "cargo-fuzz targets: libFuzzer on the stable toolchain, 10 s each"
cargo fmt --manifest-path fuzz/Cargo.toml --check
ARBOR_FUZZ_SECS="${ARBOR_FUZZ_SECS:-10}" bash scripts/fuzz.sh

step "scaling test (release, ignored by default)"
cargo test --locked --release -p arbor-shared --test it -- --ignored --nocapture
