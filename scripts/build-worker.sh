#!/usr/bin/env bash
# Installs the Worker toolchain (cached by version) and builds
# worker-realtime/ with worker-build into worker-realtime/build/.
# Facts behind every step: docs/TOOLCHAIN.md.
#
#   bash scripts/build-worker.sh            # install if needed, build
#   bash scripts/build-worker.sh --tools    # install only; prints the tools dir
#
# Standard output is data: with --tools it carries the tools folder and
# nothing else, so callers can write TOOLS=$(bash scripts/build-worker.sh
# --tools). Everything else (apt, npm, cargo, logs) goes to standard error.
#
# Env:
#   ARBOR_TOOLS       tool cache (default ~/.cache/arbor/tools); the versioned
#                     folder inside is reused when present.
#   CARGO_TARGET_DIR  base target dir; the Worker builds in "<base>-worker".
set -euo pipefail
# Keep the caller's stdout on fd 3 for the one line of data; send every
# other write of this script and of the tools it runs to stderr.
exec 3>&1 1>&2

WRANGLER_VERSION=4.86.0
BINARYEN_VERSION=132.0.0
WORKER_BUILD_VERSION=0.8.7
WASM_BINDGEN_VERSION=0.2.130
DEB_PACKAGES=(rustc-web cargo-web rust-web-src lld-22)
WASM_LD=wasm-ld-22

log() { printf '[build-worker] %s\n' "$*" >&2; }
die() { printf '[build-worker] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_base="${ARBOR_TOOLS:-$HOME/.cache/arbor/tools}"
tools="$tools_base/worker-wb${WORKER_BUILD_VERSION}-wbg${WASM_BINDGEN_VERSION}-wr${WRANGLER_VERSION}-bn${BINARYEN_VERSION}"

# ------------------------------------------------------------ 1. apt packages
pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}
missing=()
for p in "${DEB_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo -n); fi
  log "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q </dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" </dev/null
fi

# ------------------------------------------------------------ 2. tools (cached)
mkdir -p "$tools/bin"
if [[ ! -x "$tools/node_modules/.bin/wrangler" || ! -x "$tools/node_modules/.bin/wasm-opt" ]]; then
  log "npm: wrangler@$WRANGLER_VERSION binaryen@$BINARYEN_VERSION"
  (cd "$tools" && [[ -f package.json ]] || echo '{"private":true}' > "$tools/package.json")
  (cd "$tools" && npm install --no-audit --no-fund --loglevel=error \
    "wrangler@$WRANGLER_VERSION" "binaryen@$BINARYEN_VERSION" </dev/null)
fi
if [[ ! -x "$tools/bin/worker-build" ]]; then
  log "cargo install worker-build $WORKER_BUILD_VERSION (a few minutes, once)"
  cargo install --locked --root "$tools" worker-build --version "$WORKER_BUILD_VERSION" </dev/null
fi
if [[ ! -x "$tools/bin/wasm-bindgen" ]]; then
  log "cargo install wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes, once)"
  # No --locked: its lock pins a webpki-roots version the index lacks.
  cargo install --root "$tools" wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" </dev/null
fi
# worker-build runs plain cargo/rustc from PATH: Debian's, and a rustc that
# answers the wasm32 target-libdir query with an existing empty folder
# (Debian ships no prebuilt wasm32 std; -Zbuild-std builds it).
shim="$tools/shim"
mkdir -p "$shim" "$tools/empty-libdir"
ln -sf /usr/bin/cargo "$shim/cargo"
cat > "$shim/rustc" <<SHIM
#!/usr/bin/env bash
if [[ "\$*" == "--target wasm32-unknown-unknown --print target-libdir" ]]; then
  echo "$tools/empty-libdir"; exit 0
fi
exec /usr/bin/rustc "\$@"
SHIM
chmod +x "$shim/rustc"

if [[ "${1:-}" == "--tools" ]]; then
  echo "$tools" >&3
  exit 0
fi

# ------------------------------------------------------------ 3. build
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}-worker"
cd "$repo_root/worker-realtime"
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET RUSTC
start=$SECONDS
env PATH="$shim:$tools/bin:$tools/node_modules/.bin:$PATH" \
  RUSTC_BOOTSTRAP=1 \
  CARGO_UNSTABLE_BUILD_STD=std,panic_abort \
  CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LD" \
  CARGO_TARGET_DIR="$target_dir" \
  WASM_BINDGEN_BIN="$tools/bin/wasm-bindgen" \
  WASM_OPT_BIN="$tools/node_modules/.bin/wasm-opt" \
  ESBUILD_BIN="$tools/node_modules/.bin/esbuild" \
  worker-build --release </dev/null
[[ -s build/index.js ]] || die "worker-build produced no build/index.js"
log "built worker-realtime in $((SECONDS - start))s -> worker-realtime/build/"
