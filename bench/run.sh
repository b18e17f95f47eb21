#!/usr/bin/env bash
# The ingestion benchmark (see bench/README.md). `make bench` runs it after
# `cargo build --release --bins --benches`, with .stack/env sourced.
#
#   bench/run.sh             every section, then the summary against the targets in bench/README.md
#   bench/run.sh extract     one section: corpus, extract, pipeline, embed, e2e, copy,
#                            scaleout (files/s against 1, 2, 4 workers; needs no corpus)
#
# Builds the corpus under bench/out/ when it is missing (apt-get download of a Debian
# documentation package, never installed). Peers: BENCH_PEERS=1 bench/run.sh installs them
# under ~/.cache/glassbox/bench-peers (bench/peers.sh).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
target_dir="${CARGO_TARGET_DIR:-$HOME/.cache/glassbox/target}"
bin_dir="$target_dir/release"
bench_bin="$bin_dir/glassbox-bench"
out_dir="$repo_root/bench/out"

for binary in glassbox-bench worker-files; do
  if [[ ! -x "$bin_dir/$binary" ]]; then
    echo "bench: $bin_dir/$binary is missing; run: cargo build --release --bins" >&2
    exit 1
  fi
done

if ! command -v pdftotext >/dev/null || ! command -v pdfinfo >/dev/null; then
  echo "bench: installing poppler-utils (pdftotext, pdfinfo)"
  apt-get install -y -q poppler-utils >/dev/null
fi

# The Python peers live outside the clone (~/.cache/glassbox/bench-peers) and are
# installed only when BENCH_PEERS=1 (see bench/peers.sh); sections without one print
# the reference figures of bench/README.md instead.
"$repo_root/bench/peers.sh"

# The peers of the model sections (embed, e2e): sentence-transformers and LlamaIndex with
# HuggingFaceEmbedding, several GB, installed outside the clone only when BENCH_PEERS=1.
if [[ "${BENCH_PEERS:-0}" == 1 ]]; then
  bench/peers-model.sh >/dev/null || echo "bench: no model peers; embed and e2e report without them" >&2
fi

if [[ $# -eq 0 ]]; then
  # `all` builds the corpus first when it is missing.
  exec "$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" all
fi
for section in "$@"; do
  if [[ "$section" != scaleout ]]; then
    "$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" corpus
    break
  fi
done
for section in "$@"; do
  [[ "$section" == corpus ]] && continue
  "$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" "$section"
done
