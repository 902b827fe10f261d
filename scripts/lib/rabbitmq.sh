# An ephemeral RabbitMQ node standing in for the IoT hub: MQTT over TLS only (no AMQP listener),
# its users and permissions asked of the provisioning service's auth hooks
# (`rabbitmq_auth_backend_http`), its own node name, Erlang ports and data directory. Needs
# Debian's rabbitmq-server (which ships both plugins). Source this file.

source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# rmq_start DIR MQTTS_PORT HOOK_BASE TLS_DIR: starts a node with its state in DIR, MQTT over TLS
# on 127.0.0.1:MQTTS_PORT with TLS_DIR/{ca.pem,server.pem,server.key}, asking HOOK_BASE (the
# service's hook listener and secret, http://HOST:PORT/SECRET) about every user, vhost,
# resource and topic; waits (up to 90 s) until it accepts connections.
rmq_start() {
    local dir=$1 port=$2 hook=$3 tls=$4 epmd_port dist_port _
    mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
    epmd_port=$(free_port) dist_port=$(free_port)
    echo "$epmd_port" >"$dir/epmd.port"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp = none
mqtt.listeners.tcp = none
mqtt.listeners.ssl.default = 127.0.0.1:$port
mqtt.allow_anonymous = false
ssl_options.cacertfile = $tls/ca.pem
ssl_options.certfile = $tls/server.pem
ssl_options.keyfile = $tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
auth_backends.1 = http
auth_http.http_method = post
auth_http.user_path = $hook/rabbitmq/user
auth_http.vhost_path = $hook/rabbitmq/vhost
auth_http.resource_path = $hook/rabbitmq/resource
auth_http.topic_path = $hook/rabbitmq/topic
log.console = false
log.file.level = info
CONF
    echo '[rabbitmq_mqtt,rabbitmq_auth_backend_http].' >"$dir/enabled_plugins"
    (
        export HOME=$dir/home RABBITMQ_NODENAME="dps-$$-$RANDOM@localhost" \
            RABBITMQ_CONFIG_FILE=$dir/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
            RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log \
            RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$epmd_port RABBITMQ_DIST_PORT=$dist_port
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/server.log" 2>&1 &
        echo $! >"$dir/rabbitmq.pid"
    )
    for _ in $(seq 1 900); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$(cat "$dir/rabbitmq.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "RabbitMQ did not start on port $port" >&2
    cat "$dir/server.log" "$dir"/log/*.log >&2 2>/dev/null || true
    rmq_stop "$dir"
    return 1
}

# rmq_stop DIR: stops the node started by rmq_start DIR, and its Erlang port mapper.
rmq_stop() {
    local dir=$1 pid
    [[ -f $dir/rabbitmq.pid ]] || return 0
    pid=$(cat "$dir/rabbitmq.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    [[ -f $dir/epmd.port ]] && epmd -port "$(cat "$dir/epmd.port")" -kill >/dev/null 2>&1 || true
    rm -f "$dir/rabbitmq.pid"
}
