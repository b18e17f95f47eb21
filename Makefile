# GlassBox Fleet. The README's two commands are `make demo` and `make test`; both set up
# everything they need on a fresh Debian 12 machine and are safe to run again.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
# One cargo target folder outside the clone, reused by every checkout and by CI.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/glassbox/target
export CARGO_TERM_COLOR ?= never
STACK_ENV := set -a; source .stack/env; set +a

.PHONY: demo test prune-target stack down lint unit-and-integration deploy-checks docker-check docker-check-if-warm bench bench-agent clean-test-dbs

## demo: start the stack and the fleet, ingest sample documents, search them
demo: stack
	cargo build --bins
	$(STACK_ENV); scripts/demo.sh

## test: formatting, lints and every test, against the real stack
test: prune-target stack lint unit-and-integration deploy-checks docker-check-if-warm

## prune-target: remove the workspace's own build artifacts older than 6 h from the shared cargo
## target folder (every checkout leaves a set of its own), and warn when the disk is nearly full
prune-target:
	scripts/prune-target.sh

## stack: PostgreSQL + pgvector, moto (SQS, S3) and the embedding model, installed and started
stack:
	scripts/stack.sh up

## down: stop everything `make demo` and `make test` started
down:
	-scripts/demo.sh stop
	scripts/stack.sh down

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

unit-and-integration: clean-test-dbs
	# Every binary of the workspace first: tests start other packages' binaries too
	# (api-lite, testkit's mcp-test-server), which a test build alone does not build.
	cargo build --workspace --bins --locked
	$(STACK_ENV); if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace --locked --no-fail-fast; \
	else \
		cargo test --workspace --locked --no-fail-fast; \
	fi

deploy-checks:
	@if [ -x scripts/check-deploy.sh ]; then scripts/check-deploy.sh; fi

## docker-check: build the images and run the fleet from them with docker compose: files to ready,
## search, an agent run to completed, SIGTERM mid-file, down -v; prints image sizes and step times
docker-check:
	scripts/docker-check.sh

## docker-check-if-warm: the same, when one passed on this machine with the same Cargo.lock and
## docker/Dockerfile (the image caches are warm); otherwise it says how to run it and passes
docker-check-if-warm:
	scripts/docker-check.sh --if-warm

## clean-test-dbs: drop the per-test databases earlier runs left behind (named t_<unix time>_<id>;
## only those over two hours old, so a test run in another checkout on the same stack keeps its own)
clean-test-dbs:
	@$(STACK_ENV); cutoff=$$(( $$(date +%s) - 7200 )); \
	psql -qtA "$${GLASSBOX_DATABASE__URL%/*}/postgres" -c "select datname from pg_database where case when datname ~ '^t_[0-9]+_' then split_part(datname, '_', 2)::bigint < $$cutoff else datname ~ '^t_[0-9a-f]{12}$$' end" \
		| while read -r name; do psql -q "$${GLASSBOX_DATABASE__URL%/*}/postgres" -c "drop database if exists $$name" >/dev/null || true; done

## bench: ingestion benchmark (see bench/README.md)
bench: stack
	cargo build --release --bins --benches
	$(STACK_ENV); bench/run.sh

## bench-agent: agent orchestration benchmark (see bench-agent/README.md)
bench-agent: stack
	bench-agent/run.sh
