#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (libFuzzer, coverage-guided) on the
# stable toolchain: frames, snapshot, token, apply (arbor_shared::fuzz,
# the same targets the stable tests run with a fixed budget).
#
#   bash scripts/fuzz.sh                  # every target, ARBOR_FUZZ_SECS each
#   bash scripts/fuzz.sh token apply      # some of them
#
# Env:
#   ARBOR_FUZZ_SECS   seconds per target (default 30)
#   ARBOR_TOOLS       tool cache (default ~/.cache/arbor/tools)
#   CARGO_TARGET_DIR  base target dir; the targets build in "<base>-fuzz".
#
# cargo-fuzz's flags (-Cpasses=sancov-module, --cfg fuzzing, ...) need a
# nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one take them, and
# `-s none` leaves out the sanitizers (they need nightly's prebuilt
# runtimes). A finding is a panic: libFuzzer stops, prints it and keeps the
# input in fuzz/artifacts/<target>/ (replay: RUSTC_BOOTSTRAP=1 cargo fuzz run
# -s none <target> <file>).
set -euo pipefail
CARGO_FUZZ_VERSION=0.13.2
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${ARBOR_TOOLS:-$HOME/.cache/arbor/tools}/cargo-fuzz-$CARGO_FUZZ_VERSION"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/arbor/target}-fuzz"
secs="${ARBOR_FUZZ_SECS:-30}"

if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
  echo "[fuzz] cargo install cargo-fuzz $CARGO_FUZZ_VERSION (a few minutes, once)" >&2
  CARGO_TARGET_DIR="$target_dir-install" \
    cargo install --locked --root "$tools" cargo-fuzz --version "$CARGO_FUZZ_VERSION" </dev/null
fi
export PATH="$tools/bin:$PATH" RUSTC_BOOTSTRAP=1

cd "$repo_root/fuzz"
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(frames snapshot token apply); fi
cargo fuzz build -s none -O --target-dir "$target_dir" </dev/null
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  echo "[fuzz] $t for ${secs}s" >&2
  if ! cargo fuzz run "$t" -s none -O --target-dir "$target_dir" -- \
      -max_total_time="$secs" </dev/null >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[fuzz] $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^Done [0-9]+ runs' "$log" >&2 || true
done
