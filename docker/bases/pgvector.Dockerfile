# Local stand-in for pgvector/pgvector:<version>-pg<major>, built by scripts/docker-bases.sh
# only when that image cannot be pulled: Debian's postgresql-<major> and
# postgresql-<major>-pgvector packages (trixie carries PostgreSQL 17 and pgvector 0.8),
# with an entrypoint that takes POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB and PGDATA
# like the public image's. Data lives in /var/lib/postgresql/data.
FROM debian:trixie-slim
ARG POSTGRES_MAJOR=17
ARG PGVECTOR_VERSION=0.8.0
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends "postgresql-${POSTGRES_MAJOR}" "postgresql-${POSTGRES_MAJOR}-pgvector" \
 && rm -rf /var/lib/apt/lists/* \
 && installed="$(dpkg-query -W -f '${Version}' "postgresql-${POSTGRES_MAJOR}-pgvector")" \
 && case "$installed" in "${PGVECTOR_VERSION}"*) ;; *) echo "pgvector is $installed, wanted ${PGVECTOR_VERSION}" >&2; exit 1 ;; esac \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql /docker-entrypoint-initdb.d \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY pgvector-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/${POSTGRES_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data \
    LANG=C.UTF-8
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
