#!/usr/bin/env bash
# Container health probe for the GlassBox images (no curl in the runtime image).
#
#   glassbox-healthcheck api      GET /health on GLASSBOX_API__LISTEN     (default 0.0.0.0:8080)
#   glassbox-healthcheck worker   GET /health on GLASSBOX_METRICS__LISTEN (default 0.0.0.0:9100)
#
# Exits 0 when the answer's status line says 200, 1 otherwise. Uses bash's
# /dev/tcp, so it needs nothing beyond the base image.
set -euo pipefail

role="${1:-}"
case "$role" in
  api) listen="${GLASSBOX_API__LISTEN:-0.0.0.0:8080}" ;;
  worker) listen="${GLASSBOX_METRICS__LISTEN:-0.0.0.0:9100}" ;;
  *)
    echo "usage: glassbox-healthcheck api|worker" >&2
    exit 2
    ;;
esac

port="${listen##*:}"
if ! [[ "$port" =~ ^[0-9]+$ ]]; then
  echo "glassbox-healthcheck: cannot read a port from '$listen'" >&2
  exit 2
fi

# The probe gives up on its own before the orchestrator's timeout.
if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  echo "glassbox-healthcheck: nothing listens on port $port" >&2
  exit 1
fi
printf 'GET /health HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status_line=""
IFS= read -r -t 4 status_line <&3 || true
exec 3<&-

if [[ "$status_line" =~ ^HTTP/[0-9.]+\ 200 ]]; then
  exit 0
fi
echo "glassbox-healthcheck: /health answered '${status_line%$'\r'}'" >&2
exit 1
