#!/usr/bin/env bash
# A throwaway local PostgreSQL for tests: listens on 127.0.0.1 only, trust auth, its socket
# and log inside DATA_DIR. Installs Debian's `postgresql` package if pg_ctl is missing.
#
# usage: infra/local/postgres.sh start DATA_DIR PORT   # prints postgres://postgres@127.0.0.1:PORT/floe last
#        infra/local/postgres.sh stop DATA_DIR
#
# DATA_DIR must be reachable by the `postgres` user when run as root (e.g. a fresh
# `mktemp -d` under /tmp; not inside a 0700 directory such as pytest's basetemp).
set -euo pipefail

usage() {
    echo "usage: $0 start DATA_DIR PORT | stop DATA_DIR" >&2
    exit 2
}

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

find_pg_bin() {
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
        return 0
    fi
    return 1
}

ensure_installed() {
    if find_pg_bin >/dev/null; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "pg_ctl not found and not root: install PostgreSQL first"
    echo "postgres.sh: installing postgresql with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends postgresql >/dev/null
    find_pg_bin >/dev/null || die "pg_ctl still missing after installing postgresql"
}

# Run a PostgreSQL tool as the `postgres` user when we are root (initdb refuses root).
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_start() {
    local data=$1 port=$2
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    ensure_installed
    local bin
    bin=$(find_pg_bin)

    mkdir -p "$data"
    data=$(cd "$data" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$data"
        chmod 0700 "$data"
        as_pg test -w "$data" || die "user postgres cannot write $data (is a parent directory private?)"
    fi

    if [[ ! -f "$data/PG_VERSION" ]]; then
        as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-locale >"$data.initdb.log" 2>&1 ||
            { cat "$data.initdb.log" >&2; die "initdb failed"; }
        rm -f "$data.initdb.log"
    fi
    as_pg mkdir -p "$data/sock"

    if ! as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        # fsync off: a disposable test database, never anything that must survive a crash.
        as_pg "$bin/pg_ctl" start -D "$data" -l "$data/server.log" -w -t 30 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$data/sock -c fsync=off" \
            >/dev/null || { tail -n 30 "$data/server.log" >&2 || true; die "pg_ctl start failed"; }
    fi

    local i ready=0
    for i in $(seq 1 60); do
        if as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres; then
            ready=1
            break
        fi
        sleep 0.5
    done
    [[ $ready -eq 1 ]] || die "postgres on 127.0.0.1:$port did not become ready within 30 s"

    local exists
    exists=$(as_pg "$bin/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'floe'")
    if [[ "$exists" != "1" ]]; then
        as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres floe
    fi
    echo "postgres://postgres@127.0.0.1:$port/floe"
}

cmd_stop() {
    local data=$1
    [[ -f "$data/PG_VERSION" ]] || return 0
    local bin
    bin=$(find_pg_bin) || die "pg_ctl not found"
    if as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null ||
            as_pg "$bin/pg_ctl" stop -D "$data" -m immediate -w -t 10 >/dev/null
    fi
}

case "${1:-}" in
    start)
        [[ $# -eq 3 ]] || usage
        cmd_start "$2" "$3"
        ;;
    stop)
        [[ $# -eq 2 ]] || usage
        cmd_stop "$2"
        ;;
    *) usage ;;
esac
