#!/usr/bin/env bash
# The Python peers the benchmarks compare against, each in its own venv under
# ~/.cache/glassbox/bench-peers/<peer> (outside the clone, kept between runs and checkouts).
# Nothing is installed unless BENCH_PEERS=1: without it, sections print bench/README.md's
# reference figures instead of a same-run peer.
#
#   BENCH_PEERS=1 bench/peers.sh     install every peer that is missing (pinned versions)
#   bench/peers.sh                   list which peers are installed
#
# To add a peer: a line in PEERS (name, the import that proves it works, pinned packages).
set -euo pipefail

peers_dir="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/bench-peers"

# name|import check|packages (space separated, pinned to the versions measured)
PEERS=(
  "llamaindex|import llama_index.core.node_parser, llama_index.vector_stores.postgres, pypdf, docx2txt|llama-index-core==0.14.25 llama-index-vector-stores-postgres==0.9.0 pypdf==7.1.0 docx2txt==0.9"
  "langgraph|import langgraph.graph, langgraph.checkpoint.postgres, psycopg, psycopg_pool|langgraph==1.2.22 langgraph-checkpoint-postgres==3.2.0 psycopg[binary]==3.3.9 psycopg-pool==3.3.3"
)

peer_ok() {
  local name="$1" check="$2"
  "$peers_dir/$name/bin/python" -c "$check" 2>/dev/null
}

for entry in "${PEERS[@]}"; do
  IFS='|' read -r name check packages <<<"$entry"
  if peer_ok "$name" "$check"; then
    echo "peer $name: installed ($peers_dir/$name)"
    continue
  fi
  if [[ "${BENCH_PEERS:-0}" != 1 ]]; then
    echo "peer $name: not installed (BENCH_PEERS=1 bench/peers.sh installs it)"
    continue
  fi
  echo "peer $name: installing into $peers_dir/$name"
  mkdir -p "$peers_dir"
  rm -rf "${peers_dir:?}/$name"
  # shellcheck disable=SC2086 # the package list is split on purpose
  if ! { python3 -m venv "$peers_dir/$name" && "$peers_dir/$name/bin/pip" install --quiet --disable-pip-version-check $packages; }; then
    echo "peer $name: install failed; its sections fall back to the reference in bench/README.md" >&2
    rm -rf "${peers_dir:?}/$name"
  fi
done
