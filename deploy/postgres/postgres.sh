#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for tests and CI, independent of
# any cluster the machine has. Needs Debian's postgresql package (CI installs it).
#
# Usage: deploy/postgres/postgres.sh start|stop|url
#
# Environment (all optional):
#   PG_PORT      port (default 54329)
#   PG_DATA_DIR  cluster directory (default /tmp/caj-postgres-$PG_PORT)
#
# `start` prints the URL to use as TEST_POSTGRES_URL on stdout; progress goes to stderr.
set -euo pipefail

PORT=${PG_PORT:-54329}
DATA_DIR=${PG_DATA_DIR:-/tmp/caj-postgres-$PORT}
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
URL="postgresql+psycopg://caj:caj@127.0.0.1:$PORT/caj"

log() { echo "postgres.sh: $*" >&2; }

[[ -x $PG_BIN/pg_ctl ]] || { log "PostgreSQL server binaries not found; apt-get install postgresql"; exit 1; }

# PostgreSQL refuses to run as root: run its tools as the postgres user then.
as_owner() {
    if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() { as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" status >/dev/null 2>&1; }

start() {
    if [[ ! -f $DATA_DIR/PG_VERSION ]]; then
        mkdir -p "$DATA_DIR"
        [[ $(id -u) == 0 ]] && chown postgres:postgres "$DATA_DIR"
        log "initialising a cluster in $DATA_DIR"
        as_owner "$PG_BIN/initdb" -D "$DATA_DIR" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    fi
    if running; then
        log "already running on port $PORT"
    else
        # fsync stays on: tests must see the durability production gets.
        as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" -l "$DATA_DIR/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$DATA_DIR -c max_connections=300" \
            start >/dev/null
        log "started on 127.0.0.1:$PORT"
    fi
    local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA)
    if [[ -z $(as_owner "${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname='caj'") ]]; then
        as_owner "${psql[@]}" -c "CREATE ROLE caj LOGIN PASSWORD 'caj' CREATEDB"
    fi
    # Tests drop their databases WITH (FORCE), which may have to end an
    # autovacuum worker that started on a fresh database.
    as_owner "${psql[@]}" -c "SET client_min_messages = warning; GRANT pg_signal_backend TO caj" >/dev/null
    if [[ -z $(as_owner "${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname='caj'") ]]; then
        as_owner "${psql[@]}" -c "CREATE DATABASE caj OWNER caj"
    fi
    echo "$URL"
}

stop() {
    if running; then
        as_owner "$PG_BIN/pg_ctl" -D "$DATA_DIR" -m fast -w stop >/dev/null
        log "stopped"
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    url) echo "$URL" ;;
    *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
