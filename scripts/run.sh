#!/usr/bin/env bash
# The main job: the core's convergence demo, the Postgres demo (apply_ops and
# the restore rule on a throwaway cluster), then the local server stack:
# `arbor-server dev` starts its own Postgres (kept in .arbor-dev/), creates
# the thoughtspace `demo`, prints an admin token and serves the API and the
# browser demo outliner (built here by scripts/build-web.sh) until Ctrl-C.
# Two CLI replicas edit offline and converge through it first. Set
# ARBOR_RUN_NO_SERVER=1 to stop after the demos.
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
echo
echo "==> the sync server with its own Postgres, and two CLI replicas syncing through it"
cargo build --locked -q -p arbor-sync-server --bin arbor-server -p arbor-client --bin arbor
echo "--- building the browser client and demo outliner (wasm32; the first run installs its toolchain)"
bash scripts/build-web.sh
BIN="$CARGO_TARGET_DIR/debug"
LOG="$(mktemp)"
"$BIN/arbor-server" dev >"$LOG" 2>&1 &
SERVER=$!
stop_server() { kill -TERM "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
trap stop_server INT TERM EXIT
# The banner's last line is the token; the server prints it once it listens.
for _ in $(seq 1 600); do
  grep -q '^  token:' "$LOG" && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$LOG" >&2; exit 1; }
  sleep 0.1
done
cat "$LOG"
TOKEN="$(sed -n 's/^  token: *//p' "$LOG")"
URL="http://$(sed -n 's#^  api: *http://##p' "$LOG")"
DEMO="$(mktemp -d)"
arbor() { "$BIN/arbor" --token "$TOKEN" "$@"; }
echo
echo "--- replica a and replica b join thoughtspace demo"
arbor --db "$DEMO/a.db" init --server "$URL" --space demo
arbor --db "$DEMO/b.db" init --server "$URL" --space demo
G="$(arbor --db "$DEMO/a.db" add "groceries $(date +%H:%M:%S)")"
arbor --db "$DEMO/a.db" add --parent "$G" milk >/dev/null
arbor --db "$DEMO/a.db" sync
arbor --db "$DEMO/b.db" sync
echo "--- offline: a adds bread; b adds a todo, colors groceries and moves it under the todo"
arbor --db "$DEMO/a.db" add --parent "$G" bread >/dev/null
T="$(arbor --db "$DEMO/b.db" add --first "todo $(date +%H:%M:%S)")"
arbor --db "$DEMO/b.db" set "$G" color green
arbor --db "$DEMO/b.db" mv "$G" "$T"
arbor --db "$DEMO/b.db" status
echo "--- back online"
arbor --db "$DEMO/a.db" sync
arbor --db "$DEMO/b.db" sync
arbor --db "$DEMO/a.db" sync
echo "--- replica a:"; arbor --db "$DEMO/a.db" tree "$T"
echo "--- replica b:"; arbor --db "$DEMO/b.db" tree "$T"
if [[ "$(arbor --db "$DEMO/a.db" tree)" != "$(arbor --db "$DEMO/b.db" tree)" ]]; then
  echo "the replicas differ" >&2; exit 1
fi
echo "--- the replicas are identical"
rm -rf "$DEMO"
if [[ "${ARBOR_RUN_NO_SERVER:-}" == 1 ]]; then exit 0; fi
echo
echo "==> serving on $URL until Ctrl-C (token above)"
echo "    the demo outliner: $URL/demo/ (open it in two browsers, or add ?user=NAME)"
wait "$SERVER"
