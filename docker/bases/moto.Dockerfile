# Local stand-in for motoserver/moto, built by scripts/docker-bases.sh only when that
# image cannot be pulled: moto[server] from PyPI on python:3.11-slim-bookworm. Like the
# public image it serves on 0.0.0.0:5000 (MOTO_PORT changes the port) and has `python`
# with boto3 on PATH.
FROM python:3.11-slim-bookworm
ARG MOTO_VERSION=5.1.0
RUN pip install --no-cache-dir --no-compile "moto[server]==${MOTO_VERSION}" \
 && ln -s /usr/local/python/bin/moto_server /usr/local/bin/moto_server
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/moto_server", "-H", "0.0.0.0"]
