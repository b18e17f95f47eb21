#!/usr/bin/env bash
# The base images that docker/Dockerfile and docker/compose.yaml name, made available
# to the local Docker engine: pulled when a registry answers, and otherwise built here
# from Debian's packages, PyPI and this machine's Rust toolchain, then tagged with the
# same public names. So the Dockerfile and the compose file stay exactly what a user
# with Docker Hub runs, and an image already present is never rebuilt.
#
#   scripts/docker-bases.sh           every base the Dockerfile and compose file name
#   scripts/docker-bases.sh NAME...   only these (for example debian:bookworm-slim)
#   scripts/docker-bases.sh --list    print the names and whether each is present
#
# The local recipes (docker/bases/ holds their Dockerfiles):
#   debian:bookworm-slim, debian:trixie-slim
#       debootstrap --variant=minbase from the Debian mirror in this machine's apt
#       configuration, trimmed like the official slim images, then `docker import`
#   gcr.io/distroless/cc-debian12:nonroot
#       only the files of base-files, netbase, tzdata, libc6, libgcc-s1, libstdc++6 and
#       the CA bundle, taken from that bookworm tree: no shell, no package manager,
#       user 65532 (nonroot), as the public image
#   python:3.11-slim-bookworm   debian:bookworm-slim + Debian's python3 in a venv, pip
#   rust:<version>-bookworm     debian:bookworm-slim + a C toolchain + this machine's Rust
#                               toolchain (its version must be the tag's)
#   motoserver/moto:<version>   python:3.11-slim-bookworm + moto[server] from PyPI
#   pgvector/pgvector:<v>-pg17  debian:trixie-slim + Debian's postgresql-17 and
#                               postgresql-17-pgvector, with an entrypoint that honours
#                               POSTGRES_USER/PASSWORD/DB like the public image's
#
# The images that build things (python, rust) trust this machine's CA bundle as well as
# Debian's, so pip and cargo inside a build reach the package registries the way the
# machine does. The runtime bases carry Debian's bundle only.
#
# Needs root (debootstrap, a running dockerd). The debootstrap trees are cached under
# ~/.cache/glassbox/docker-bases, so a second build of the same base takes seconds.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASES_DIR="$REPO_ROOT/docker/bases"
CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/glassbox/docker-bases"
DOCKER="${DOCKER:-docker}"
# Nothing from outside but a package registry can be reached here; a pull that cannot
# connect fails at once, one that hangs is cut short.
PULL_TIMEOUT_SECONDS="${DOCKER_BASES_PULL_TIMEOUT:-60}"

log() { printf '\033[1;34m[docker-bases]\033[0m %s\n' "$*" >&2; }
die() {
  printf '\033[1;31m[docker-bases] error:\033[0m %s\n' "$*" >&2
  exit 1
}

# ---------------------------------------------------------------------------
# Which bases, and whether they are there

# Every image the Dockerfile's *_IMAGE build arguments and the compose file's
# `image:` lines name, except our own (glassbox/*).
named_bases() {
  {
    sed -n 's/^ARG [A-Z_]*_IMAGE=\(.*\)$/\1/p' "$REPO_ROOT/docker/Dockerfile"
    sed -n 's/^ *image: *\([^ #]*\).*$/\1/p' "$REPO_ROOT/docker/compose.yaml"
  } | grep -v '^glassbox/' | sort -u
}

image_present() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

try_pull() {
  log "pulling $1"
  if timeout "$PULL_TIMEOUT_SECONDS" "$DOCKER" pull -q "$1" >/dev/null 2>&1; then
    log "$1: pulled"
    return 0
  fi
  log "$1: cannot pull it, building it here"
  return 1
}

# ---------------------------------------------------------------------------
# debootstrap trees

debian_mirror() {
  local mirror
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  [[ -n "$mirror" ]] || mirror="$(awk '$1 == "deb" && $2 ~ /debian\/?$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$mirror" ]] || die "cannot find the Debian mirror in the apt configuration"
  printf '%s' "$mirror"
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  [[ $EUID -eq 0 ]] || die "need root to install debootstrap"
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# Prints the path of a minbase tree of SUITE, made once and kept in the cache.
# ca-certificates, netbase and tzdata ride along for the distroless base.
debootstrap_tree() {
  local suite="$1"
  local tree="$CACHE_DIR/rootfs-$suite"
  if [[ -f "$tree/.glassbox-complete" ]]; then
    printf '%s' "$tree"
    return 0
  fi
  [[ $EUID -eq 0 ]] || die "need root to debootstrap $suite"
  ensure_debootstrap
  mkdir -p "$CACHE_DIR"
  rm -rf "$tree" "$tree.partial"
  log "debootstrap --variant=minbase $suite (a few minutes; log: $CACHE_DIR/debootstrap-$suite.log)"
  if ! nice -n 10 debootstrap --variant=minbase --include=ca-certificates,netbase,tzdata \
    "$suite" "$tree.partial" "$(debian_mirror)" >"$CACHE_DIR/debootstrap-$suite.log" 2>&1; then
    tail -n 20 "$CACHE_DIR/debootstrap-$suite.log" >&2
    die "debootstrap $suite failed"
  fi
  mv "$tree.partial" "$tree"
  touch "$tree/.glassbox-complete"
  printf '%s' "$tree"
}

# The trims the official slim images make: no docs, man pages or locales, now or in
# later installs, and no apt caches.
slim_tree() {
  local tree="$1"
  cat >"$tree/etc/dpkg/dpkg.cfg.d/glassbox-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  cat >"$tree/etc/apt/apt.conf.d/glassbox-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Acquire::Languages "none";
APT::Install-Recommends "false";
CFG
  find "$tree/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$tree/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  rm -rf "$tree"/usr/share/man/* "$tree"/usr/share/info/* "$tree"/usr/share/locale/* \
    "$tree"/usr/share/lintian/* "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/* \
    "$tree"/var/log/* "$tree"/tmp/* "$tree/.glassbox-complete"
}

build_debian_slim() {
  local name="$1" suite="${1#debian:}"
  suite="${suite%-slim}"
  local tree work
  tree="$(debootstrap_tree "$suite")"
  work="$CACHE_DIR/work-$suite-slim"
  rm -rf "$work"
  cp -a "$tree" "$work"
  slim_tree "$work"
  log "docker import $name"
  tar -C "$work" --numeric-owner -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$work"
}

# distroless/cc: the files of a few packages, nothing else (no shell, no dpkg, no apt).
build_distroless_cc() {
  local name="$1"
  local tree work
  tree="$(debootstrap_tree bookworm)"
  work="$CACHE_DIR/work-distroless"
  rm -rf "$work"
  mkdir -p "$work"
  python3 - "$tree" "$work" base-files netbase tzdata libc6 libgcc-s1 libstdc++6 <<'PY'
import os, shutil, sys

tree, out, packages = sys.argv[1], sys.argv[2], sys.argv[3:]
skipped = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/lintian/",
           "/usr/share/locale/", "/usr/share/base-files/", "/usr/share/common-licenses/")

def canonical(path):
    """The path inside the tree with merged-/usr directory links resolved."""
    parent = os.path.realpath(os.path.join(tree, os.path.dirname(path).lstrip("/")))
    return os.path.join(os.path.relpath(parent, tree), os.path.basename(path))

for package in packages:
    listing = None
    for candidate in (f"{package}.list", f"{package}:amd64.list"):
        if os.path.exists(os.path.join(tree, "var/lib/dpkg/info", candidate)):
            listing = os.path.join(tree, "var/lib/dpkg/info", candidate)
    if listing is None:
        sys.exit(f"package {package} is not in the debootstrap tree")
    for line in open(listing):
        path = line.rstrip("\n")
        if not path or path == "/." or path.startswith(skipped):
            continue
        source = os.path.join(tree, path.lstrip("/"))
        if os.path.isdir(source) and not os.path.islink(source):
            continue
        if not os.path.lexists(source):
            continue
        destination = os.path.join(out, canonical(path))
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if not os.path.lexists(destination):
            shutil.copy2(source, destination, follow_symlinks=False)
PY
  # merged /usr, as the public image
  local link
  for link in bin lib lib64 sbin; do
    mkdir -p "$work/usr/$link"
    ln -sfn "usr/$link" "$work/$link"
  done
  mkdir -p "$work/etc/ssl/certs" "$work/home/nonroot" "$work/tmp" "$work/root" "$work/var/lib/dpkg"
  cp "$tree/etc/ssl/certs/ca-certificates.crt" "$work/etc/ssl/certs/ca-certificates.crt"
  chmod 1777 "$work/tmp"
  chmod 700 "$work/root"
  chown 65532:65532 "$work/home/nonroot"
  cat >"$work/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat >"$work/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
GROUP
  printf 'passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n' >"$work/etc/nsswitch.conf"
  [[ -e "$work/usr/bin/sh" || -e "$work/usr/bin/bash" ]] && die "the distroless tree has a shell"
  log "docker import $name"
  tar -C "$work" --numeric-owner -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'USER 65532:65532' \
    --change 'WORKDIR /home/nonroot' - "$name" >/dev/null
  rm -rf "$work"
}

# The machine's CA bundle: Debian's roots plus whatever this machine trusts on top.
machine_ca_bundle() {
  local bundle
  for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
    [[ -s "$bundle" ]] && {
      printf '%s' "$bundle"
      return 0
    }
  done
  die "this machine has no CA bundle"
}

# docker build with the host's network (only loopback and the registries' proxies are
# reachable here) and a throwaway context.
build_from_recipe() {
  local name="$1" recipe="$2"
  shift 2
  local context
  context="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$context'" RETURN
  cp "$(machine_ca_bundle)" "$context/machine-ca-bundle.crt"
  cp "$BASES_DIR"/* "$context/"
  log "docker build $name ($recipe)"
  DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --network host -f "$context/$recipe" -t "$name" "$@" "$context" >/dev/null
}

build_python() {
  local name="$1"
  ensure_base debian:bookworm-slim
  build_from_recipe "$name" python.Dockerfile
}

build_moto() {
  local name="$1"
  ensure_base python:3.11-slim-bookworm
  build_from_recipe "$name" moto.Dockerfile --build-arg "MOTO_VERSION=${name##*:}"
}

build_pgvector() {
  local name="$1" tag="${1##*:}"
  local pgvector_version="${tag%-pg*}" postgres_major="${tag##*-pg}"
  ensure_base debian:trixie-slim
  build_from_recipe "$name" pgvector.Dockerfile \
    --build-arg "PGVECTOR_VERSION=$pgvector_version" --build-arg "POSTGRES_MAJOR=$postgres_major"
}

# The machine's own toolchain: no other can be fetched here.
build_rust() {
  local name="$1" tag="${1##*:}"
  local wanted="${tag%%-*}"
  command -v rustc >/dev/null 2>&1 || die "$name: this machine has no Rust toolchain to put in it"
  local sysroot version
  sysroot="$(rustc --print sysroot)"
  version="$(rustc --version | awk '{print $2}')"
  [[ "$version" == "$wanted" ]] || die "$name: this machine's rustc is $version, the tag says $wanted; change RUST_IMAGE in docker/Dockerfile"
  ensure_base debian:bookworm-slim
  local context
  context="$(mktemp -d)"
  # shellcheck disable=SC2064
  trap "rm -rf '$context'" RETURN
  cp "$(machine_ca_bundle)" "$context/machine-ca-bundle.crt"
  cp "$BASES_DIR/rust.Dockerfile" "$context/"
  log "copying the Rust $version toolchain without its docs"
  mkdir -p "$context/toolchain"
  tar -C "$sysroot" --exclude=./share/doc -c . | tar -C "$context/toolchain" -x
  log "docker build $name (rust.Dockerfile)"
  DOCKER_BUILDKIT=0 "$DOCKER" build --quiet --network host -f "$context/rust.Dockerfile" -t "$name" \
    --build-arg "RUST_VERSION=$version" "$context" >/dev/null
}

build_base() {
  local name="$1"
  case "$name" in
    debian:bookworm-slim | debian:trixie-slim) build_debian_slim "$name" ;;
    gcr.io/distroless/cc-debian12:nonroot) build_distroless_cc "$name" ;;
    python:3.11-slim-bookworm) build_python "$name" ;;
    rust:*-bookworm) build_rust "$name" ;;
    motoserver/moto:*) build_moto "$name" ;;
    pgvector/pgvector:*-pg17) build_pgvector "$name" ;;
    *) die "no local recipe for $name: add one to scripts/docker-bases.sh" ;;
  esac
  image_present "$name" || die "$name: built, but the engine does not have it"
  log "$name: built here"
}

ensure_base() {
  local name="$1"
  image_present "$name" && return 0
  try_pull "$name" && return 0
  build_base "$name"
}

main() {
  "$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers (start dockerd first, or run make docker-check)"
  if [[ "${1:-}" == "--list" ]]; then
    local base
    while read -r base; do
      if image_present "$base"; then printf 'present  %s\n' "$base"; else printf 'missing  %s\n' "$base"; fi
    done < <(named_bases)
    return 0
  fi
  local bases=("$@")
  if [[ ${#bases[@]} -eq 0 ]]; then
    mapfile -t bases < <(named_bases)
  fi
  local base started
  for base in "${bases[@]}"; do
    started=$SECONDS
    if image_present "$base"; then
      log "$base: present"
      continue
    fi
    ensure_base "$base"
    log "$base: ready in $((SECONDS - started)) s"
  done
}

main "$@"
