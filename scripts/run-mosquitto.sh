#!/usr/bin/env bash
# The certificate hub in the foreground: Mosquitto taking certificate logins
# (scripts/lib/mosquitto.sh), with `provisioning-service crl-sync` beside it keeping its CRL from
# the service and signalling it on each change. Environment:
#   DPS_BROKER_DIR      configuration, log, pid and CRL
#   DPS_BROKER_PORT     MQTT over TLS; DPS_BROKER_BIND the address (default 127.0.0.1)
#   DPS_BROKER_TLS_DIR  server.pem and server.key
#   DPS_DEVICE_CA_FILE  the root of the devices' certificates
#   DPS_CRL_URL, DPS_CRL_ISSUER_FILE, DPS_CA_FILE   what crl-sync reads (`crl-sync --help`)
#   DPS_BACKEND_CN      the back end's certificate name (default hub-backend)
set -euo pipefail
here=$(dirname "$0")
source "$here/lib/mosquitto.sh"
dir=${DPS_BROKER_DIR:?} port=${DPS_BROKER_PORT:?}
mkdir -p "$dir"
service=${PROVISIONING_SERVICE:-provisioning-service}
# The broker reads its CRL at start: wait (up to a minute) for the service to serve it.
for _ in $(seq 1 60); do
    "$service" crl-sync --once --out "$dir/crl.pem" 2>"$dir/crl-sync.log" && break
    sleep 1
done
[[ -f $dir/crl.pem ]] || { cat "$dir/crl-sync.log" >&2; exit 1; }
MOSQ_BIND=${DPS_BROKER_BIND:-127.0.0.1} mosq_configure "$dir" "$port" "${DPS_BROKER_TLS_DIR:?}" \
    "${DPS_DEVICE_CA_FILE:?}" "$dir/crl.pem" "${DPS_BACKEND_CN:-hub-backend}"
# This shell becomes Mosquitto (exec), so its pid is the broker's.
echo $$ >"$dir/mosquitto.pid"
"$service" crl-sync --out "$dir/crl.pem" --reload-pidfile "$dir/mosquitto.pid" 2>>"$dir/crl-sync.log" &
exec "${MOSQUITTO:-/usr/sbin/mosquitto}" -c "$dir/mosquitto.conf"
