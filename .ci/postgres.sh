#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster from Debian's packages for the PostgreSQL store tests,
# and prints the URL to export as OPAMP_TEST_POSTGRES_URL.
#
#   url=$(bash .ci/postgres.sh start DIR [PORT])   # installs postgresql if missing
#   bash .ci/postgres.sh stop DIR
#
# The cluster lives in DIR (created, owned by the `postgres` user, since initdb refuses to run
# as root), listens on 127.0.0.1:PORT (default 55432) and a Unix socket in DIR, and trusts
# local connections: it is for tests on loopback only, never for data anyone keeps.
set -euo pipefail

action=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop DIR [PORT]}
port=${3:-55432}
# The postgres user may not enter the caller's working directory (a private clone), and its
# tools then complain on every call; work from / with an absolute DIR.
dir=$(realpath -m "$dir")
cd /

bindir() {
    local found
    found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -z "$found" ] || [ ! -x "$found/initdb" ]; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    echo "$found"
}

as_postgres() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$action" in
start)
    bin=$(bindir)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
        # initdb would only say "Permission denied"; name the cause.
        if ! runuser -u postgres -- test -x "$dir"; then
            echo "postgres.sh: the postgres user cannot reach $dir (a parent directory is" \
                "private); use a directory under /tmp" >&2
            exit 1
        fi
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_postgres "$bin/initdb" -D "$dir/data" -U postgres --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # fsync off: a test cluster is thrown away, and the tests measure the store's logic, not
    # the disk. The store's own durability comes from PostgreSQL's defaults in production.
    as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" \
        start >&2 || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://postgres@127.0.0.1:$port/postgres"
    ;;
stop)
    bin=$(bindir)
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2 || true
    ;;
*)
    echo "unknown action $action" >&2
    exit 2
    ;;
esac
