# An ephemeral RabbitMQ node standing in for the IoT hub: MQTT over TLS only (no AMQP listener),
# its users and permissions asked of the provisioning service's auth hooks
# (`rabbitmq_auth_backend_http`), its own node name, Erlang ports and data directory. Needs
# Debian's rabbitmq-server (which ships both plugins) or the official image. Source this file.

source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# rmq_configure DIR LISTEN HOOK_BASE TLS_DIR: writes DIR/rabbitmq.conf and DIR/enabled_plugins
# for MQTT over TLS on LISTEN (HOST:PORT) with TLS_DIR/{ca.pem,server.pem,server.key}, asking
# HOOK_BASE (the service's hook listener, secret and this broker's hub,
# http://HOST:PORT/SECRET/hubs/HUB) about every user, vhost, resource and topic.
rmq_configure() {
    local dir=$1 listen=$2 hook=$3 tls=$4
    mkdir -p "$dir/mnesia" "$dir/log" "$dir/home"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp = none
mqtt.listeners.tcp = none
mqtt.listeners.ssl.default = $listen
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
}

# rmq_exec DIR: replaces the shell with the node configured in DIR (own node name, cookie home,
# Erlang port mapper and distribution ports).
rmq_exec() {
    local dir=$1 epmd_port
    epmd_port=${ERL_EPMD_PORT:-$(free_port)}
    echo "$epmd_port" >"$dir/epmd.port"
    export HOME=$dir/home RABBITMQ_NODENAME="dps-$$@localhost" \
        RABBITMQ_CONFIG_FILE=$dir/rabbitmq RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins \
        RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log \
        ERL_EPMD_PORT=$epmd_port RABBITMQ_DIST_PORT=${RABBITMQ_DIST_PORT:-$(free_port)}
    exec "${RABBITMQ_SERVER:-/usr/lib/rabbitmq/bin/rabbitmq-server}"
}

# rmq_start DIR MQTTS_PORT HOOK_BASE TLS_DIR: a node on 127.0.0.1:MQTTS_PORT in the background;
# waits (up to 90 s) until it accepts connections. Stop it with rmq_stop DIR.
rmq_start() {
    local dir=$1 port=$2 hook=$3 tls=$4 _
    rmq_configure "$dir" "127.0.0.1:$port" "$hook" "$tls"
    (setsid bash -c "source '${BASH_SOURCE[0]}' && rmq_exec '$dir'" >"$dir/server.log" 2>&1 &
        echo $! >"$dir/rabbitmq.pid")
    rmq_wait "$dir" "$port"
}

# rmq_wait DIR PORT: waits (up to 90 s) until the node started in DIR listens on PORT.
rmq_wait() {
    local dir=$1 port=$2 _
    for _ in $(seq 1 900); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        [[ ! -f $dir/rabbitmq.pid ]] || kill -0 "$(cat "$dir/rabbitmq.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "RabbitMQ did not start on port $port" >&2
    cat "$dir/server.log" "$dir"/log/*.log >&2 2>/dev/null || true
    rmq_stop "$dir"
    return 1
}

# rmq_stop DIR: stops the node started by rmq_start DIR (or a run-broker.sh whose pid is in
# DIR/rabbitmq.pid), and its Erlang port mapper.
rmq_stop() {
    local dir=$1 pid _
    [[ -f $dir/rabbitmq.pid ]] || return 0
    pid=$(cat "$dir/rabbitmq.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    if [[ -f $dir/epmd.port ]]; then
        epmd -port "$(cat "$dir/epmd.port")" -kill >/dev/null 2>&1 || true
    fi
    rm -f "$dir/rabbitmq.pid"
}
