#!/usr/bin/env bash
# Builds Arbor for the browser into web/dist/: the client-web crate for
# wasm32 (SQLite compiled by clang, std built with -Zbuild-std), bound with
# wasm-bindgen, shrunk with wasm-opt, and the TypeScript (API, worker, demo)
# bundled by esbuild. Toolchain facts: docs/TOOLCHAIN.md.
#
#   bash scripts/build-web.sh            # install what is missing, build
#   bash scripts/build-web.sh --clippy   # also clippy -D warnings (wasm32)
#
# Env: ARBOR_TOOLS (tool cache), CARGO_TARGET_DIR (base; the web build uses
# "<base>-web").
set -euo pipefail

DEB_PACKAGES=(clang-22 llvm-22 chromium)
log() { printf '[build-web] %s\n' "$*" >&2; }
die() { printf '[build-web] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The wasm toolchain (Debian rustc-web, wasm-bindgen, binaryen) is the
# Worker's: install it (cached) and learn where it lives.
tools="$(bash "$repo_root/scripts/build-worker.sh" --tools)"

pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then SUDO=(sudo -n); fi
missing=()
for p in "${DEB_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q </dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" </dev/null
fi

cd "$repo_root/web"
# npm ci when node_modules is missing or older than the lockfile (npm keeps
# its own copy of what it installed in node_modules/.package-lock.json).
if [[ ! -x node_modules/.bin/esbuild || ! -d node_modules/playwright-core ||
      package-lock.json -nt node_modules/.package-lock.json ]]; then
  log "npm ci (esbuild, typescript, playwright-core, React types)"
  npm ci --no-audit --no-fund --loglevel=error </dev/null
fi

target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}-web"
cd "$repo_root/client-web"
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET
# Debian's toolchain (rustc-web) for wasm32, std built from its sources.
wasm_cargo() {
  env PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc \
    RUSTC_BOOTSTRAP=1 \
    CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=wasm-ld-22 \
    CC_wasm32_unknown_unknown=clang-22 \
    AR_wasm32_unknown_unknown=llvm-ar-22 \
    CARGO_TARGET_DIR="$target_dir" \
    /usr/bin/cargo "$@" </dev/null
}
if [[ "${1:-}" == "--clippy" ]]; then
  pkg_installed rust-web-clippy || "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends rust-web-clippy </dev/null
  log "clippy (wasm32) -D warnings"
  wasm_cargo clippy --locked --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort -- -D warnings
fi
start=$SECONDS
wasm_cargo build --locked --release --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
wasm="$target_dir/wasm32-unknown-unknown/release/arbor_client_web.wasm"
[[ -s "$wasm" ]] || die "no $wasm"
log "built client-web in $((SECONDS - start))s"

pkg="$repo_root/web/pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
"$tools/bin/wasm-bindgen" --target web --out-dir "$pkg" --out-name arbor_client_web "$wasm"
"$tools/node_modules/.bin/wasm-opt" -O3 \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$pkg/arbor_client_web_bg.wasm" -o "$pkg/arbor_client_web_bg.wasm"

cd "$repo_root/web"
node build.mjs
log "web/dist ready ($(du -sh dist | cut -f1))"
