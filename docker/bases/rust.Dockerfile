# Local stand-in for rust:<version>-bookworm, built by scripts/docker-bases.sh only when
# that image cannot be pulled: debian:bookworm-slim, a C toolchain for the -sys crates,
# and this machine's Rust toolchain (copied into ./toolchain by the script), laid out as
# in the public image (CARGO_HOME=/usr/local/cargo, RUSTUP_HOME=/usr/local/rustup).
FROM debian:bookworm-slim
ARG RUST_VERSION
# The machine's CA bundle, so cargo reaches the crate registry the way the machine does.
COPY machine-ca-bundle.crt /usr/local/share/glassbox/ca-bundle.crt
# Versions follow the Debian release of the base.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc g++ libc6-dev make cmake perl pkg-config git ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=${RUST_VERSION} \
    SSL_CERT_FILE=/usr/local/share/glassbox/ca-bundle.crt \
    CARGO_HTTP_CAINFO=/usr/local/share/glassbox/ca-bundle.crt
COPY toolchain /usr/local/rustup/toolchains/${RUST_VERSION}-x86_64-unknown-linux-gnu
RUN mkdir -p /usr/local/cargo/bin \
 && for tool in /usr/local/rustup/toolchains/"${RUST_VERSION}"-x86_64-unknown-linux-gnu/bin/*; do \
      ln -s "$tool" /usr/local/cargo/bin/; \
    done \
 && cargo --version && rustc --version
