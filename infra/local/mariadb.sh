#!/usr/bin/env bash
# A throwaway local MariaDB for tests: listens on 127.0.0.1 only, its data, socket and log
# inside DATA_DIR, a user `floe` with password PASSWORD on database `floe`. Installs Debian's
# `mariadb-server` package if mariadbd is missing (the package's own service is not used).
#
# usage: infra/local/mariadb.sh start DATA_DIR PORT PASSWORD   # prints mysql://floe@127.0.0.1:PORT/floe last
#        infra/local/mariadb.sh stop DATA_DIR
set -euo pipefail

usage() {
    echo "usage: $0 start DATA_DIR PORT PASSWORD | stop DATA_DIR" >&2
    exit 2
}

die() {
    echo "mariadb.sh: $*" >&2
    exit 1
}

ensure_installed() {
    if [[ -x /usr/sbin/mariadbd ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "mariadbd not found and not root: install mariadb-server first"
    echo "mariadb.sh: installing mariadb-server with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends mariadb-server >/dev/null
    [[ -x /usr/sbin/mariadbd ]] || die "mariadbd still missing after installing mariadb-server"
    # The package may start its own service on 3306: the tests do not use it.
    service mariadb stop >/dev/null 2>&1 || true
}

cmd_start() {
    local data=$1 port=$2 password=$3
    [[ "$port" =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$port'"
    [[ "$password" =~ ^[A-Za-z0-9_-]+$ ]] || die "PASSWORD: letters, digits, _ and - only"
    ensure_installed
    mkdir -p "$data"
    data=$(cd "$data" && pwd)
    local user=()
    [[ $(id -u) -eq 0 ]] && user=(--user=root)
    if [[ ! -d "$data/db/mysql" ]]; then
        mariadb-install-db --no-defaults "${user[@]}" --datadir="$data/db" --auth-root-authentication-method=socket \
            --skip-test-db >"$data/install.log" 2>&1 || { cat "$data/install.log" >&2; die "mariadb-install-db failed"; }
    fi
    # --no-defaults must come first: the package's /etc/mysql settings are not read.
    /usr/sbin/mariadbd --no-defaults "${user[@]}" --datadir="$data/db" --port="$port" --bind-address=127.0.0.1 \
        --socket="$data/mysqld.sock" --pid-file="$data/mysqld.pid" --log-error="$data/server.log" \
        --skip-name-resolve --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 \
        </dev/null >/dev/null 2>&1 &
    local i
    for i in $(seq 1 60); do
        if mariadb --no-defaults --socket="$data/mysqld.sock" -uroot -e "SELECT 1" >/dev/null 2>&1; then
            break
        fi
        [[ $i -eq 60 ]] && { tail -n 30 "$data/server.log" >&2 || true; die "mariadb on 127.0.0.1:$port did not start within 30 s"; }
        sleep 0.5
    done
    mariadb --no-defaults --socket="$data/mysqld.sock" -uroot -e "
        CREATE DATABASE IF NOT EXISTS floe;
        CREATE USER IF NOT EXISTS 'floe'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL ON *.* TO 'floe'@'127.0.0.1' WITH GRANT OPTION;" ||
        die "cannot create the floe user"
    echo "mysql://floe@127.0.0.1:$port/floe"
}

cmd_stop() {
    local data=$1
    [[ -f "$data/mysqld.pid" ]] || return 0
    local pid
    pid=$(cat "$data/mysqld.pid")
    kill "$pid" 2>/dev/null || return 0
    local i
    for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "$pid" 2>/dev/null || true
}

case "${1:-}" in
    start)
        [[ $# -eq 4 ]] || usage
        cmd_start "$2" "$3" "$4"
        ;;
    stop)
        [[ $# -eq 2 ]] || usage
        cmd_stop "$2"
        ;;
    *) usage ;;
esac
