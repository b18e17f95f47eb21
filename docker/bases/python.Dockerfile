# Local stand-in for python:3.11-slim-bookworm, built by scripts/docker-bases.sh only when
# that image cannot be pulled: Debian's python3 (3.11) in a venv at /usr/local/python, whose
# bin/ comes first on PATH, so `python`, `python3` and `pip` are the venv's as in the public
# image (a symlink to a venv's python would not see the venv's packages).
FROM debian:bookworm-slim
# The machine's CA bundle (Debian's roots plus what the machine trusts on top), so pip
# reaches the package index the way the machine does.
COPY machine-ca-bundle.crt /usr/local/share/glassbox/ca-bundle.crt
# Versions follow the Debian release of the base.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/usr/local/share/glassbox/ca-bundle.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    LANG=C.UTF-8
CMD ["python3"]
