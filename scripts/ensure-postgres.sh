#!/usr/bin/env bash
# Make sure a local PostgreSQL 15 answers on FRONTEND_DB_PORT (default 5432):
# start Debian's cluster, or create it. PostgreSQL runs as the postgres user.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
port=${FRONTEND_DB_PORT:-5432}

if ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    if ! pg_lsclusters -h 2>/dev/null | awk -v v="$PG_MAJOR" '$1 == v && $2 == "main"' | grep -q .; then
        say "creating the PostgreSQL $PG_MAJOR cluster 'main' on port $port"
        as_root pg_createcluster "$PG_MAJOR" main --port "$port" >/dev/null
    fi
    say "starting PostgreSQL $PG_MAJOR"
    as_root pg_ctlcluster --skip-systemctl-redirect "$PG_MAJOR" main start
    for _ in $(seq 1 60); do
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        sleep 0.5
    done
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" || die "PostgreSQL did not start on port $port"
fi
