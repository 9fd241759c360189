#!/usr/bin/env bash
# Throwaway PostgreSQL for the gateway tests (idempotent).
# Installs Debian's postgresql if missing, runs a cluster under /tmp as the postgres user on
# 127.0.0.1:${AVOKIT_PG_PORT:-55432}, creates database avokit_test, and prints
#   export AVOKIT_TEST_PG_URL=postgresql://avokit:avokit@127.0.0.1:PORT/avokit_test
# Usage: eval "$(.ci/postgres.sh)"
set -euo pipefail
PORT="${AVOKIT_PG_PORT:-55432}"
DATA="${AVOKIT_PG_DATA:-/tmp/avokit-pg}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
BIN="$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")"
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then mkdir -p "$DATA" && chown postgres:postgres "$DATA"; fi
if [ ! -f "$DATA/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-h 127.0.0.1 -p $PORT -k $DATA -c max_connections=300 -c fsync=off" start >/dev/null
fi
PSQL=("$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
if [ "$(as_pg "${PSQL[@]}" -c "select 1 from pg_roles where rolname='avokit'")" != 1 ]; then
  as_pg "${PSQL[@]}" -c "create role avokit login password 'avokit' createdb" >/dev/null
fi
if [ "$(as_pg "${PSQL[@]}" -c "select 1 from pg_database where datname='avokit_test'")" != 1 ]; then
  as_pg "${PSQL[@]}" -c "create database avokit_test owner avokit" >/dev/null
fi
echo "export AVOKIT_TEST_PG_URL=postgresql://avokit:avokit@127.0.0.1:$PORT/avokit_test"
