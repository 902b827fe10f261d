# An ephemeral Mosquitto broker standing in for the IoT hub with certificate logins: MQTT over
# TLS on loopback only, every client authenticated by its certificate (the CN is its username),
# checked against the credential policy's CRL, and an ACL that lets each device publish only to
# its own events topic and subscribe only to its own cloud-to-device topic. Its configuration,
# log and pid live in one directory. Needs Debian's mosquitto. Source this file.

source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# mosq_configure DIR PORT TLS_DIR CLIENT_CA CRL_FILE [BACKEND_CN]: writes DIR/mosquitto.conf and
# DIR/acl: a listener on 127.0.0.1:PORT (MOSQ_BIND:PORT if set) with
# TLS_DIR/{server.pem,server.key}, client certificates required and verified against CLIENT_CA
# (the root of the devices' chains) and CRL_FILE (PEM, kept by `provisioning-service crl-sync`,
# re-read on SIGHUP). BACKEND_CN, a client certificate's CN, may read every device's events and
# write their cloud-to-device topics.
mosq_configure() {
    local dir=$1 port=$2 tls=$3 client_ca=$4 crl=$5 backend=${6:-hub-backend}
    mkdir -p "$dir"
    cat >"$dir/acl" <<ACL
# A device (username = its certificate's CN = its device id) publishes device-to-cloud
# messages on its own topic and subscribes to its own cloud-to-device messages; nothing else.
pattern write devices/%u/messages/events/#
pattern read devices/%u/messages/devicebound/#

user $backend
topic read devices/+/messages/events/#
topic write devices/+/messages/devicebound/#
ACL
    cat >"$dir/mosquitto.conf" <<CONF
# Stay the user that started it (as root Mosquitto would switch to user mosquitto, which
# cannot read this directory).
user $(id -un)
persistence false
log_dest file $dir/mosquitto.log
log_type error
log_type warning
log_type notice
log_type subscribe
connection_messages true
per_listener_settings false
allow_anonymous false
acl_file $dir/acl

listener $port ${MOSQ_BIND:-127.0.0.1}
certfile $tls/server.pem
keyfile $tls/server.key
cafile $client_ca
require_certificate true
use_identity_as_username true
crlfile $crl
CONF
}

# mosq_start DIR PORT TLS_DIR CLIENT_CA CRL_FILE [BACKEND_CN]: a broker configured as above, in
# the background (its pid in DIR/mosquitto.pid, for crl-sync's --reload-pidfile); waits (up to
# 10 s) until it listens. Stop it with mosq_stop DIR.
mosq_start() {
    local dir=$1 port=$2 _
    mosq_configure "$@"
    (setsid "${MOSQUITTO:-/usr/sbin/mosquitto}" -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
        echo $! >"$dir/mosquitto.pid")
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$(cat "$dir/mosquitto.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "Mosquitto did not start on port $port" >&2
    cat "$dir/server.log" "$dir/mosquitto.log" >&2 2>/dev/null || true
    mosq_stop "$dir"
    return 1
}

# mosq_stop DIR: stops the broker started by mosq_start DIR (or a run-mosquitto.sh whose pid is
# in DIR/mosquitto.pid), with its process group (run-mosquitto.sh's crl-sync).
mosq_stop() {
    local dir=$1 pid _
    [[ -f $dir/mosquitto.pid ]] || return 0
    pid=$(cat "$dir/mosquitto.pid")
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/mosquitto.pid"
}
