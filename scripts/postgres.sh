#!/usr/bin/env bash
# A throw-away PostgreSQL cluster for the ledger's tests and benchmarks, from Debian's `postgresql`.
#   bash scripts/postgres.sh start DIR   -> initdb in DIR, start on a free loopback port, print its URL
#   bash scripts/postgres.sh stop DIR    -> stop it and delete DIR
# As root the server runs as the `postgres` user. Exit status 3: no PostgreSQL on this machine.
set -euo pipefail
cmd=${1:?usage: postgres.sh start|stop DIR}
dir=${2:?usage: postgres.sh start|stop DIR}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "postgres.sh: no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)" >&2
  exit 3
fi
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$cmd" in
  start)
    mkdir -p "$dir"
    # the cluster lives in a folder of its own under /tmp, which the postgres user can reach
    # whatever the permissions of DIR's parents; DIR records where it is
    data=$(mktemp -d -t stealkit-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then chown postgres "$data"; fi
    echo "$data" >"$dir/cluster"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    as_pg "$BIN/initdb" -D "$data/data" -A trust -U postgres -E UTF8 >"$dir/initdb.log" 2>&1 \
      || { cat "$dir/initdb.log" >&2; exit 1; }
    as_pg "$BIN/pg_ctl" -D "$data/data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1 -c max_connections=300" start >/dev/null \
      || { cat "$data/server.log" >&2; exit 1; }
    as_pg "$BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres stealkit
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/stealkit" | tee "$dir/url"
    ;;
  stop)
    if [ -f "$dir/cluster" ]; then
      data=$(cat "$dir/cluster")
      as_pg "$BIN/pg_ctl" -D "$data/data" -m fast -w stop >/dev/null 2>&1 || true
      rm -rf "$data"
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: postgres.sh start|stop DIR" >&2; exit 2 ;;
esac
