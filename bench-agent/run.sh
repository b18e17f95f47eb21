#!/usr/bin/env bash
# The agent orchestration benchmark (see bench-agent/README.md): builds the workspace's
# binaries, then runs bench-agent against the local stack (`make stack`), on one and on
# two worker-agent processes, at 10 and 50 steps per run. Extra arguments go to
# bench-agent (e.g. --steps-per-phase 1600). PROFILE=debug uses the dev build instead.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

if [ -f .stack/env ]; then
  set -a
  # shellcheck disable=SC1091
  source .stack/env
  set +a
fi

if [ "$PROFILE" = "release" ]; then
  cargo build --release --workspace --bins
  BIN="$TARGET/release"
else
  cargo build --workspace --bins
  BIN="$TARGET/debug"
fi

echo "bench-agent: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), profile $PROFILE"
"$BIN/bench-agent" --worker-bin "$BIN/worker-agent" "$@"
