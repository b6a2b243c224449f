#!/usr/bin/env bash
# Build the `arbor-shared` library for wasm32-unknown-unknown with Debian's
# rustc-web toolchain (1.96) and -Zbuild-std, because rustup here only has
# the x86_64 std and cannot download targets.
# See docs/TOOLCHAIN.md.
#
# Env:
#   CARGO_TARGET_DIR  base target dir (default ~/.cache/arbor/target); this
#                     script uses "<base>-wasm" so it never touches the native build.
set -euo pipefail

DEB_PACKAGES=(rustc-web cargo-web rust-web-src lld-22)
DEB_CARGO=/usr/bin/cargo
DEB_RUSTC=/usr/bin/rustc
WASM_LD=wasm-ld-22
TARGET=wasm32-unknown-unknown
CRATE=arbor-shared

log() { printf '[build-wasm-shared] %s\n' "$*" >&2; }
die() { printf '[build-wasm-shared] error: %s\n' "$*" >&2; exit 1; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---------------------------------------------------------------- 1. packages
pkg_installed() {
  [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

toolchain_present() {
  local p
  for p in "${DEB_PACKAGES[@]}"; do pkg_installed "$p" || return 1; done
  [[ -x "$DEB_CARGO" && -x "$DEB_RUSTC" ]] && command -v "$WASM_LD" >/dev/null 2>&1 \
    && [[ -d "$("$DEB_RUSTC" --print sysroot)/lib/rustlib/src/rust/library" ]]
}

if toolchain_present; then
  log "Debian wasm toolchain present, skipping apt"
else
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian 12 expected)"
  SUDO=()
  if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${DEB_PACKAGES[*]}"
    SUDO=(sudo -n)
  fi
  log "installing ${DEB_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${SUDO[@]}" apt-get update -q </dev/null
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${DEB_PACKAGES[@]}" </dev/null
  toolchain_present || die "toolchain still incomplete after apt-get install"
fi

# ---------------------------------------------------------------- 2. build
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}-wasm"
[[ "$target_dir" == /* ]] || target_dir="$PWD/$target_dir"   # relative to the caller's cwd, like cargo
mkdir -p "$target_dir"

# Use Debian's cargo/rustc explicitly; rustup's ~/.cargo/bin is first on PATH,
# and no rustup toolchain override or wrapper must leak into this build.
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTDOC CARGO_BUILD_TARGET
export RUSTC="$DEB_RUSTC"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$WASM_LD"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "$("$DEB_CARGO" --version) / $("$DEB_RUSTC" --version)"
log "target dir: $target_dir"

cd "$repo_root"
start=$SECONDS
"$DEB_CARGO" build \
  --locked \
  -p "$CRATE" --lib \
  --target "$TARGET" \
  -Zbuild-std=std,panic_abort \
  --release \
  --target-dir "$target_dir" </dev/null

# ---------------------------------------------------------------- 3. report
rlib="$target_dir/$TARGET/release/lib${CRATE//-/_}.rlib"
[[ -s "$rlib" ]] || die "expected artifact missing: $rlib"
size="$(stat -c %s "$rlib")"
echo "wasm32: $CRATE built ($size bytes rlib) in $((SECONDS - start))s -> $rlib"
