# A Postgres cluster that survives the loss of its primary, on loopback in one directory: one
# etcd member (the consensus store), two Postgres 15 nodes run by Patroni in synchronous mode (a
# commit is acknowledged only once the standby has it, so the standby Patroni promotes has every
# acknowledged transaction), and HAProxy routing to whichever node Patroni's REST API reports as
# primary. The service connects through HAProxy. Needs Debian's patroni, etcd-server, haproxy
# and postgresql. Source this file.
#
#   ha_start DIR [async]  start everything; writes DIR/ha.env (ports, DATABASE_URL, sync)
#   ha_primary DIR        the node (node1 or node2) that is primary now, once there is one
#   ha_kill_postmaster DIR NODE / ha_kill_patroni DIR NODE / ha_start_patroni DIR NODE
#   ha_hold_replication DIR NODE   the primary NODE stops sending WAL to its standby
#   ha_wait_for_standby DIR   until the node that is not primary streams from it
#   ha_stop DIR           stop everything started in DIR (safe to call twice)
#
# Settings that decide a failover's length (docs/operations.md): Patroni's ttl 10 s (how long a
# leader that stopped renewing keeps its lock), loop_wait 1 s, primary_start_timeout 0 (a
# crashed primary is failed over at once rather than restarted in place, safe because the
# standby is synchronous), HAProxy's check every 500 ms, its sessions to a node shut down the
# moment that node stops being primary. `ha_start DIR async` starts the cluster with
# asynchronous replication (to show what the loss check catches).

source "$(dirname "${BASH_SOURCE[0]}")/postgres.sh"
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

HA_NODES=(node1 node2)

# Patroni runs as the postgres user when root (Postgres refuses to run as root); setpriv execs,
# so the pid recorded is Patroni's own.
ha_owner=()
[[ $(id -u) -eq 0 ]] && ha_owner=(setpriv --reuid postgres --regid postgres --init-groups --)

ha_env() { # DIR KEY: a value from DIR/ha.env
    sed -n "s/^$2=//p" "$1/ha.env"
}

ha_write_patroni_config() { # DIR NODE PG_PORT REST_PORT ETCD_PORT SYNC
    local dir=$1 node=$2 pg_port=$3 rest_port=$4 etcd_port=$5 sync=$6 bin max_lag=1048576
    # Asynchronous (the loss demonstration): promote the standby however far behind it is.
    [[ $sync == false ]] && max_lag=1073741824
    bin=$(pg_bin)
    cat >"$dir/$node/patroni.yml" <<YAML
scope: dps
namespace: /dps-ha/
name: $node
log:
  level: INFO
restapi:
  listen: 127.0.0.1:$rest_port
  connect_address: 127.0.0.1:$rest_port
etcd3:
  host: 127.0.0.1:$etcd_port
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 3
    primary_start_timeout: 0
    maximum_lag_on_failover: $max_lag
    synchronous_mode: $sync
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        wal_log_hints: 'on'
        max_connections: 200
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
  - encoding: UTF8
  - auth: trust
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
postgresql:
  listen: 127.0.0.1:$pg_port
  connect_address: 127.0.0.1:$pg_port
  data_dir: $dir/$node/data
  bin_dir: $bin
  pgpass: $dir/$node/pgpass
  authentication:
    superuser: {username: postgres, password: postgres}
    replication: {username: replicator, password: replicator}
    rewind: {username: postgres, password: postgres}
  parameters:
    unix_socket_directories: $dir/$node
    fsync: 'off'  # throwaway loopback nodes only: never where the data matters
  basebackup:
  - checkpoint: fast
YAML
}

ha_start_patroni() { # DIR NODE: Patroni for NODE, in the background (pid in DIR/NODE/patroni.pid)
    local dir=$1 node=$2
    # From the node's directory (the postgres user may not be allowed into the caller's); the
    # subshell execs, so the pid recorded is Patroni's and nothing keeps the caller's output open.
    (cd "$dir/$node" && exec setsid "${ha_owner[@]}" patroni "$dir/$node/patroni.yml" \
        >>"$dir/$node/patroni.log" 2>&1 </dev/null) &
    echo $! >"$dir/$node/patroni.pid"
}

ha_wait() { # SECONDS WHAT COMMAND...: runs COMMAND every 200 ms until it succeeds
    local seconds=$1 what=$2 _
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "ha: $what did not happen within $seconds s" >&2
    return 1
}

ha_is_primary() { # DIR NODE
    curl -sf -o /dev/null "http://127.0.0.1:$(ha_env "$1" "${2}_rest")/primary"
}

ha_is_sync_standby() { # DIR NODE
    curl -sf -o /dev/null "http://127.0.0.1:$(ha_env "$1" "${2}_rest")/sync"
}

ha_is_replica() { # DIR NODE
    curl -sf -o /dev/null "http://127.0.0.1:$(ha_env "$1" "${2}_rest")/replica"
}

ha_primary() { # DIR: the primary's node name
    local node
    for node in "${HA_NODES[@]}"; do
        ha_is_primary "$1" "$node" && { echo "$node"; return 0; }
    done
    return 1
}

ha_through_haproxy() { # DIR: a statement through HAProxy reaches a primary
    psql -qAt "$(ha_env "$1" DATABASE_URL)" -c "SELECT NOT pg_is_in_recovery()" | grep -qx t
}

ha_standby_ready() { # DIR: the node that is not primary streams (synchronously in a sync cluster)
    local primary node
    primary=$(ha_primary "$1") || return 1
    for node in "${HA_NODES[@]}"; do
        [[ $node == "$primary" ]] && continue
        if [[ $(ha_env "$1" sync) == false ]]; then ha_is_replica "$1" "$node" || return 1
        else ha_is_sync_standby "$1" "$node" || return 1; fi
    done
}

ha_wait_for_standby() { # DIR: until the standby streams (after a failover: the old primary rejoined)
    ha_wait 90 "the standby streaming" ha_standby_ready "$1"
}

ha_start() { # DIR [async]
    local dir=$1 etcd_port etcd_peer haproxy_port node i sync=true
    [[ ${2:-} == async ]] && sync=false
    mkdir -p "$dir"
    etcd_port=$(free_port) etcd_peer=$((etcd_port + 1))
    {
        echo "sync=$sync"
        echo "etcd=$etcd_port"
        for node in "${HA_NODES[@]}"; do
            i=$(free_port)
            echo "${node}_pg=$i"
            echo "${node}_rest=$((i + 1))"
        done
        haproxy_port=$(free_port)
        echo "haproxy=$haproxy_port"
        echo "DATABASE_URL=postgres://postgres@127.0.0.1:$haproxy_port/postgres"
    } >"$dir/ha.env"

    (setsid etcd --name ha --data-dir "$dir/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
        --initial-cluster "ha=http://127.0.0.1:$etcd_peer" >"$dir/etcd.log" 2>&1 &
        echo $! >"$dir/etcd.pid")
    ha_wait 20 "etcd listening" curl -sf "http://127.0.0.1:$etcd_port/health" || return 1

    for node in "${HA_NODES[@]}"; do
        mkdir -p "$dir/$node"
        ha_write_patroni_config "$dir" "$node" "$(ha_env "$dir" "${node}_pg")" \
            "$(ha_env "$dir" "${node}_rest")" "$etcd_port" "$sync"
    done
    if [[ $(id -u) -eq 0 ]]; then
        chown -R postgres: "$dir"
        "${ha_owner[@]}" test -w "$dir" || {
            echo "ha: the postgres user cannot reach $dir (make its parents searchable)" >&2
            return 1
        }
    fi
    # The first node bootstraps the cluster; the second then copies it.
    ha_start_patroni "$dir" node1
    ha_wait 60 "node1 becoming primary" ha_is_primary "$dir" node1 || return 1
    ha_start_patroni "$dir" node2

    cat >"$dir/haproxy.cfg" <<CFG
global
    maxconn 2000
defaults
    mode tcp
    timeout connect 1s
    timeout client 30m
    timeout server 30m
    timeout check 1s
listen postgres
    bind 127.0.0.1:$haproxy_port
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 500ms fall 1 rise 1 on-marked-down shutdown-sessions
    server node1 127.0.0.1:$(ha_env "$dir" node1_pg) check port $(ha_env "$dir" node1_rest)
    server node2 127.0.0.1:$(ha_env "$dir" node2_pg) check port $(ha_env "$dir" node2_rest)
CFG
    haproxy -f "$dir/haproxy.cfg" -D -p "$dir/haproxy.pid" >"$dir/haproxy.log" 2>&1 || {
        cat "$dir/haproxy.log" >&2
        return 1
    }
    ha_wait_for_standby "$dir" || return 1
    ha_wait 20 "HAProxy routing to the primary" ha_through_haproxy "$dir"
}

ha_postmaster_pid() { # DIR NODE
    head -1 "$1/$2/data/postmaster.pid" 2>/dev/null
}

ha_kill_postmaster() { # DIR NODE: the node's Postgres dies at once (its Patroni lives on)
    kill -9 "$(ha_postmaster_pid "$1" "$2")"
    ha_kill_held "$1"
}

ha_hold_replication() { # DIR NODE: NODE (the primary) stops sending WAL: its WAL senders are
    # frozen (SIGSTOP, pids in DIR/held.pids; ha_kill_postmaster and ha_stop kill them).
    local pid
    for pid in $(psql -qAt -h 127.0.0.1 -p "$(ha_env "$1" "${2}_pg")" -U postgres postgres \
        -c "SELECT pid FROM pg_stat_replication"); do
        kill -STOP "$pid" && echo "$pid" >>"$1/held.pids"
    done
    [[ -s $1/held.pids ]]
}

ha_kill_held() { # DIR: kills the WAL senders ha_hold_replication froze
    [[ -f $1/held.pids ]] || return 0
    xargs -r kill -9 <"$1/held.pids" 2>/dev/null || true
    rm -f "$1/held.pids"
}

ha_kill_patroni() { # DIR NODE: the node's Patroni dies at once (its Postgres lives on)
    kill -9 "$(cat "$1/$2/patroni.pid")"
}

ha_stop() { # DIR (every step tolerates what is already gone: it also runs after a failed start)
    local dir=$1 node bin
    bin=$(pg_bin)
    [[ -f $dir/haproxy.pid ]] && { kill "$(cat "$dir/haproxy.pid")" 2>/dev/null || true; }
    ha_kill_held "$dir"
    # Patroni first, so that nothing starts Postgres again; then Postgres, its backends with it.
    for node in "${HA_NODES[@]}"; do
        [[ -f $dir/$node/patroni.pid ]] && { kill -9 "$(cat "$dir/$node/patroni.pid")" 2>/dev/null || true; }
    done
    for node in "${HA_NODES[@]}"; do
        [[ -f $dir/$node/data/postmaster.pid ]] &&
            { "${ha_owner[@]}" "$bin/pg_ctl" -D "$dir/$node/data" -m immediate stop >/dev/null 2>&1 || true; }
    done
    [[ -f $dir/etcd.pid ]] && { kill -9 "$(cat "$dir/etcd.pid")" 2>/dev/null || true; }
    return 0
}
