#!/usr/bin/env bash
# The ingestion benchmark (see bench/README.md). `make bench` runs it after
# `cargo build --release --bins --benches`, with .stack/env sourced.
#
#   bench/run.sh             every section, then the summary against DESIGN.md's targets
#   bench/run.sh extract     one section: corpus, extract, pipeline, embed, e2e, copy
#
# Builds the corpus under bench/out/ when it is missing (apt-get download of a Debian
# documentation package, never installed), and the LlamaIndex peer's venv likewise.
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

# The peer of the "pipeline without the model" section, pinned to the versions measured.
peer_venv="$out_dir/llamaindex-venv"
peer_packages=(
  "llama-index-core==0.14.25"
  "llama-index-vector-stores-postgres==0.9.0"
  "pypdf==7.1.0"
  "docx2txt==0.9"
)
if ! "$peer_venv/bin/python" -c 'import llama_index.vector_stores.postgres, pypdf, docx2txt' 2>/dev/null; then
  echo "bench: installing the LlamaIndex peer into $peer_venv"
  mkdir -p "$out_dir"
  if ! { python3 -m venv "$peer_venv" && "$peer_venv/bin/pip" install --quiet "${peer_packages[@]}"; }; then
    echo "bench: could not install the peer; the pipeline section will print DESIGN's reference instead" >&2
    rm -rf "$peer_venv"
  fi
fi

# The peers of the model sections (embed, e2e): sentence-transformers and LlamaIndex with
# HuggingFaceEmbedding, several GB, installed outside the clone only when BENCH_PEERS=1.
if [[ "${BENCH_PEERS:-0}" == 1 ]]; then
  bench/peers-model.sh >/dev/null || echo "bench: no model peers; embed and e2e report without them" >&2
fi

if [[ $# -eq 0 ]]; then
  # `all` builds the corpus first when it is missing.
  exec "$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" all
fi
"$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" corpus
for section in "$@"; do
  [[ "$section" == corpus ]] && continue
  "$bench_bin" --out "$out_dir" --bin-dir "$bin_dir" "$section"
done
