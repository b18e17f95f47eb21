#!/usr/bin/env bash
# Entrypoint of the local pgvector/pgvector stand-in (docker/bases/pgvector.Dockerfile).
# Does what the public postgres image's entrypoint does for the settings this project
# uses: on an empty PGDATA it runs initdb with POSTGRES_USER and POSTGRES_PASSWORD
# (scram-sha-256 over TCP), creates POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.sql
# and *.sh, then starts `postgres` as the postgres user with any extra arguments
# (`postgres -c name=value -p port`). PGPORT sets the port, as for postgres itself.
set -euo pipefail

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [[ "${1:-postgres}" != "postgres" ]]; then
  exec "$@"
fi
shift || true

if [[ $EUID -eq 0 ]]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user="${POSTGRES_USER:-postgres}"
  database="${POSTGRES_DB:-$user}"
  password_file="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$password_file"
  initdb --username="$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$password_file"
  printf "listen_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"

  # A private server on the socket only, for the set-up.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  if [[ "$database" != "postgres" ]]; then
    psql -v ON_ERROR_STOP=1 -q --username "$user" --dbname postgres \
      -c "CREATE DATABASE \"$database\"" >/dev/null
  fi
  for script in /docker-entrypoint-initdb.d/*; do
    case "$script" in
      *.sql) psql -v ON_ERROR_STOP=1 -q --username "$user" --dbname "$database" -f "$script" ;;
      *.sh) bash "$script" ;;
      *) ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "docker-entrypoint: database $database ready for user $user"
fi

exec postgres "$@"
