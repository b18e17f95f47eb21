#!/usr/bin/env bash
# The peers of the sections that run the embedding model (`embed`, `e2e`):
# sentence-transformers on PyTorch, and LlamaIndex with HuggingFaceEmbedding, in one
# bench-only venv outside the clone (PyPI's torch wheel brings several GB of CUDA
# libraries; the registry offers no CPU-only build). Installed only when asked
# (BENCH_PEERS=1 bench/run.sh, or BENCH_PEERS=1 make bench) and cached.
#
#   bench/peers-model.sh          print the venv's python when it is installed
#   BENCH_PEERS=1 bench/peers-model.sh   install it first when it is missing
set -euo pipefail

venv="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/bench-peers/sentence-transformers"
# Pinned to the versions measured in bench/README.md.
packages=(
  "sentence-transformers==6.2.0"
  "torch==2.15.0"
  "llama-index-core==0.14.25"
  "llama-index-embeddings-huggingface==0.8.0"
  "llama-index-vector-stores-postgres==0.9.0"
  "pypdf==7.1.0"
  "docx2txt==0.9"
)
check='import sentence_transformers, torch, llama_index.embeddings.huggingface, llama_index.vector_stores.postgres, pypdf, docx2txt'

if ! "$venv/bin/python" -c "$check" 2>/dev/null; then
  if [[ "${BENCH_PEERS:-0}" != 1 ]]; then
    echo "bench: the model peers are not installed (BENCH_PEERS=1 installs them into $venv)" >&2
    exit 1
  fi
  echo "bench: installing sentence-transformers and LlamaIndex + HuggingFaceEmbedding into $venv (several GB)" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2; then
    echo "bench: could not install the model peers" >&2
    rm -rf "$venv"
    exit 1
  fi
fi
echo "$venv/bin/python"
