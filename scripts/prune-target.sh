#!/usr/bin/env bash
# Keeps the shared cargo target folder ($CARGO_TARGET_DIR, outside the clone) from filling the
# disk, and says plainly when the disk is too full for `make test`.
#
# Every checkout and every CI clone builds the workspace's own crates into that one folder.
# Their artifacts are named by a hash of the checkout's path and the build's features, so each
# checkout (and each `cargo build -p`) leaves a set of its own: some 4.6 GB of debug binaries and
# test binaries, plus incremental caches. Third-party crates are shared and kept.
#
# Removes, for the workspace's crates only, artifacts and incremental caches not written for
# PRUNE_HOURS (default 6). A checkout that still uses one rebuilds it (cargo sees the output is
# missing); a build in progress only writes fresh files, so it never loses one.
#
# Then checks free space: below MIN_FREE_GB (default 8) it warns, with what uses the most.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"
PRUNE_HOURS="${PRUNE_HOURS:-6}"
MIN_FREE_GB="${MIN_FREE_GB:-8}"

log() { printf '\033[1;34m[prune-target]\033[0m %s\n' "$*" >&2; }

# The workspace's target names as rustc writes them (dashes become underscores).
workspace_crates() {
  cargo metadata --no-deps --format-version 1 --manifest-path "$REPO_ROOT/Cargo.toml" |
    python3 -c '
import json, sys
names = {target["name"].replace("-", "_")
         for package in json.load(sys.stdin)["packages"]
         for target in package["targets"]
         if target["name"] != "build-script-build"}
print("|".join(sorted(names)))'
}

prune() {
  [[ -d "$TARGET" ]] || return 0
  local crates pattern minutes=$((PRUNE_HOURS * 60)) before after profile
  crates="$(workspace_crates)"
  [[ -n "$crates" ]] || return 0
  # `lib<name>-<16 hex>.rlib`, `<name>-<16 hex>` (a test or binary) and its `.d` file.
  pattern="^(lib)?($crates)-[0-9a-f]{16}(\..*)?$"
  before="$(du -sk "$TARGET" | cut -f1)"
  for profile in debug release; do
    if [[ -d "$TARGET/$profile/deps" ]]; then
      find "$TARGET/$profile/deps" -maxdepth 1 -type f -mmin "+$minutes" -printf '%f\n' |
        { grep -E "$pattern" || true; } |
        while read -r name; do rm -f "$TARGET/$profile/deps/$name"; done
    fi
    if [[ -d "$TARGET/$profile/incremental" ]]; then
      find "$TARGET/$profile/incremental" -mindepth 1 -maxdepth 1 -type d -mmin "+$minutes" \
        -exec rm -rf {} +
    fi
  done
  after="$(du -sk "$TARGET" | cut -f1)"
  log "$TARGET: $((before / 1024)) MB → $((after / 1024)) MB (the workspace's artifacts older than $PRUNE_HOURS h removed)"
}

check_free() {
  local free_kb
  free_kb="$(df --output=avail -k "$REPO_ROOT" | tail -n 1)"
  if ((free_kb < MIN_FREE_GB * 1024 * 1024)); then
    log "WARNING: $((free_kb / 1024)) MB free. In a fresh clone \`make test\` writes several GB: its own debug build of the workspace (about 4.6 GB of artifacts here, plus incremental caches), the venvs, the test databases. The largest users:"
    du -sh "$TARGET" "$REPO_ROOT/.stack" /tmp /var/lib/docker 2>/dev/null | sort -h >&2 || true
  fi
}

prune
check_free
