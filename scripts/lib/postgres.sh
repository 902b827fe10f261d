# An ephemeral PostgreSQL cluster on loopback, in a temporary directory. Source this file.
# initdb and pg_ctl refuse to run as root; as root they run as the `postgres` user.

pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb ]] && { echo "$dir"; return 0; }
    done
    echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2
    return 1
}

pg_as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_start DIR PORT: initdb in DIR/pgdata, start on 127.0.0.1:PORT (socket in DIR/pgdata),
# wait until ready, and export DATABASE_URL for the superuser `postgres`.
pg_start() {
    local dir=$1 port=$2 bin
    bin=$(pg_bin)
    mkdir -p "$dir/pgdata"
    [[ $(id -u) -eq 0 ]] && chown postgres: "$dir" "$dir/pgdata"
    pg_as_owner "$bin/initdb" -D "$dir/pgdata" -A trust -U postgres --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    pg_as_owner "$bin/pg_ctl" -D "$dir/pgdata" -l "$dir/pgdata/server.log" -w \
        -o "-p $port -k $dir/pgdata -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_preload_libraries=pg_stat_statements" \
        start >/dev/null || {
        cat "$dir/pgdata/server.log" >&2
        return 1
    }
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

# pg_stop DIR: stops the cluster started by pg_start.
pg_stop() {
    local dir=$1 bin
    [[ -f $dir/pgdata/postmaster.pid ]] || return 0
    bin=$(pg_bin)
    pg_as_owner "$bin/pg_ctl" -D "$dir/pgdata" -m fast stop >/dev/null 2>&1 || true
}

# pg_cpu_ticks DIR: CPU clock ticks the cluster started in DIR has used so far: the postmaster,
# its exited children and its live ones (one that exits while being counted counts nothing).
pg_cpu_ticks() {
    local postmaster total child
    postmaster=$(head -1 "$1/pgdata/postmaster.pid")
    total=$(awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat")
    for child in $(pgrep -P "$postmaster"); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$child/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
