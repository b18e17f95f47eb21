#!/usr/bin/env bash
# `make demo`: start api-lite and worker-files against the local stack, ingest three
# sample documents, show progress, then search. Then start worker-agent and run an agent
# on a node: it searches the files, asks a question (answered through the API), writes an
# output (approved through the API with an approver token) and completes; the trace
# shows tokens and cost.
# The agent's model is LLM_BASE_URL + LLM_API_KEY (+ LLM_MODEL) when both are set, and
# otherwise the recorded responses in testkit/recordings/demo-agent.json, served by the
# recorded-llm binary. `scripts/demo.sh stop` stops the fleet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.stack/fleet"
# The dev profile: it shares the test build, and dependencies are optimised anyway.
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
API_PORT="${DEMO_API_PORT:-58080}"
LLM_PORT="${DEMO_LLM_PORT:-58090}"

stop() {
  for pid_file in "$RUN"/*.pid; do
    [ -e "$pid_file" ] || continue
    local pid
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      echo "stopped $(basename "$pid_file" .pid)"
    fi
    rm -f "$pid_file"
  done
}

if [ "${1:-}" = "stop" ]; then
  stop
  exit 0
fi

mkdir -p "$RUN"
stop >/dev/null
export GLASSBOX_AUTH__JWT_SECRET="${GLASSBOX_AUTH__JWT_SECRET:-demo-secret-change-me-0123456789}"
export GLASSBOX_STORAGE__BUCKET="${GLASSBOX_STORAGE__BUCKET:-glassbox-demo}"
export GLASSBOX_STORAGE__CREATE_BUCKET=true
export GLASSBOX_QUEUES__FILE_JOBS="${GLASSBOX_QUEUES__FILE_JOBS:-glassbox-demo-file-jobs}"
export GLASSBOX_QUEUES__AGENT_JOBS="${GLASSBOX_QUEUES__AGENT_JOBS:-glassbox-demo-agent-jobs}"
export GLASSBOX_QUEUES__CREATE=true
export GLASSBOX_API__LISTEN="127.0.0.1:$API_PORT"
export GLASSBOX_METRICS__LISTEN="127.0.0.1:0"
export RUST_LOG="${RUST_LOG:-info,sqlx=warn,aws=warn}"
# Runs may use only allowed, priced models (README: Agent spend).
case "${LLM_MODEL:-gpt-4o-mini}" in
  gpt-4o-mini | gpt-4o) ;;
  *)
    if [ -z "${GLASSBOX_AGENT_WORKER__ALLOWED_MODELS:-}" ]; then
      echo "LLM_MODEL=$LLM_MODEL is not in the default model allowlist: set GLASSBOX_AGENT_WORKER__ALLOWED_MODELS" >&2
      echo "and its price (GLASSBOX_AGENT_WORKER__PRICES__<model>__INPUT_PER_MILLION_USD and __OUTPUT_PER_MILLION_USD)" >&2
      exit 1
    fi
    ;;
esac

echo "==> starting api-lite on http://127.0.0.1:$API_PORT (log: .stack/fleet/api-lite.log)"
"$BIN/api-lite" serve >"$RUN/api-lite.log" 2>&1 &
echo $! >"$RUN/api-lite.pid"
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$API_PORT/ready" >/dev/null && break
  kill -0 "$(cat "$RUN/api-lite.pid")" 2>/dev/null || { tail -20 "$RUN/api-lite.log"; exit 1; }
  sleep 0.2
done
curl -fs "http://127.0.0.1:$API_PORT/ready" >/dev/null || { echo "api-lite is not ready"; tail -20 "$RUN/api-lite.log"; exit 1; }

echo "==> starting worker-files (log: .stack/fleet/worker-files.log)"
"$BIN/worker-files" >"$RUN/worker-files.log" 2>&1 &
echo $! >"$RUN/worker-files.pid"

SAMPLES="$RUN/samples"
"$BIN/make-samples" "$SAMPLES" >/dev/null
# A fresh org per run, so earlier runs never show up in this run's results.
ORG="$(cat /proc/sys/kernel/random/uuid)"
TOKEN="$("$BIN/api-lite" token --org "$ORG" --subject demo)"

python3 "$ROOT/scripts/demo_client.py" files "http://127.0.0.1:$API_PORT" "$TOKEN" "$SAMPLES"

echo
if [ -n "${LLM_BASE_URL:-}" ] && [ -n "${LLM_API_KEY:-}" ]; then
  MODEL="${LLM_MODEL:-gpt-4o-mini}"
  MODEL_LABEL="live model $MODEL at $LLM_BASE_URL"
  export GLASSBOX_LLM__BASE_URL="$LLM_BASE_URL"
  export GLASSBOX_LLM__API_KEY="$LLM_API_KEY"
else
  RECORDING="$ROOT/testkit/recordings/demo-agent.json"
  MODEL="${LLM_MODEL:-gpt-4o-mini}"
  MODEL_LABEL="recorded responses, not a live model ($(basename "$RECORDING"); set LLM_BASE_URL and LLM_API_KEY for a live one)"
  echo "==> starting recorded-llm on http://127.0.0.1:$LLM_PORT (log: .stack/fleet/recorded-llm.log)"
  "$BIN/recorded-llm" "$RECORDING" "127.0.0.1:$LLM_PORT" >"$RUN/recorded-llm.log" 2>&1 &
  echo $! >"$RUN/recorded-llm.pid"
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$LLM_PORT/health" >/dev/null && break
    kill -0 "$(cat "$RUN/recorded-llm.pid")" 2>/dev/null || { tail -20 "$RUN/recorded-llm.log"; exit 1; }
    sleep 0.1
  done
  export GLASSBOX_LLM__BASE_URL="http://127.0.0.1:$LLM_PORT/v1"
  export GLASSBOX_LLM__API_KEY="not-needed-for-recorded-responses"
fi
echo "==> agent model: $MODEL_LABEL"
echo "==> starting worker-agent (log: .stack/fleet/worker-agent.log)"
GLASSBOX_AGENT_WORKER__RECEIVE_WAIT_SECS=1 "$BIN/worker-agent" >"$RUN/worker-agent.log" 2>&1 &
echo $! >"$RUN/worker-agent.pid"
# Only a token with the approver role may approve the agent's held tool calls.
APPROVER_TOKEN="$("$BIN/api-lite" token --org "$ORG" --subject demo-approver --approver)"
python3 "$ROOT/scripts/demo_client.py" agent "http://127.0.0.1:$API_PORT" "$TOKEN" "$APPROVER_TOKEN" "$MODEL" "$MODEL_LABEL"
echo
OPS_TOKEN="$("$BIN/api-lite" token --org "$ORG" --subject demo-ops --ops)"
echo "==> what ops see (fleetctl queues; fleetctl audit)"
FLEETCTL_API_URL="http://127.0.0.1:$API_PORT" FLEETCTL_TOKEN="$OPS_TOKEN" "$BIN/fleetctl" queues
FLEETCTL_API_URL="http://127.0.0.1:$API_PORT" FLEETCTL_TOKEN="$OPS_TOKEN" "$BIN/fleetctl" audit --limit 5
echo "Ops dashboard: http://127.0.0.1:$API_PORT/ops#token=$OPS_TOKEN"
echo
echo "The fleet is still running at http://127.0.0.1:$API_PORT. To call it as this run's org:"
echo "  TOKEN=\$(GLASSBOX_AUTH__JWT_SECRET=$GLASSBOX_AUTH__JWT_SECRET $BIN/api-lite token --org $ORG)"
echo "  curl -s -H \"authorization: Bearer \$TOKEN\" http://127.0.0.1:$API_PORT/v1/files"
echo "  curl -s -H \"authorization: Bearer \$TOKEN\" http://127.0.0.1:$API_PORT/v1/executions/<id>/trace"
echo "Stop everything with: make down"
