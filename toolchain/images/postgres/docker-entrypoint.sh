#!/bin/sh
# The environment contract of the official postgres image, for Debian's PostgreSQL 15: on the
# first start (no $PGDATA/PG_VERSION) create the cluster with POSTGRES_USER and
# POSTGRES_PASSWORD (scram-sha-256 for every TCP client) and the database POSTGRES_DB; then run
# the command (postgres) as PID 1, listening on every address of the pod.
set -eu

if [ "${1:-}" = postgres ] && [ ! -s "${PGDATA:?PGDATA must be set}/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: the database is not initialised and POSTGRES_PASSWORD is not set" >&2
    exit 1
  fi
  user=${POSTGRES_USER:-postgres}
  db=${POSTGRES_DB:-$user}
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/var/run/postgresql'"
  } >>"$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    # Single-user mode: no server listens before the database and its owner are in place.
    printf 'CREATE DATABASE "%s";\n' "$(printf '%s' "$db" | sed 's/"/""/g')" |
      postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "database cluster initialised in $PGDATA (user $user, database $db)"
fi
exec "$@"
