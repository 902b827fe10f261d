#!/usr/bin/env bash
# The main job, on one machine: an ephemeral Postgres, a manufactured software TPM, the
# provisioning service with a throwaway CA, a factory enrolling the device's EK through the
# enrollment API, the device provisioning itself, then using its identity: it sends a message
# to its hub (a RabbitMQ node that asks the service about every connect) and a back-end
# application receives it; with the certificate it was issued for a key in its TPM it sends
# another over mutual TLS to a Mosquitto broker that knows nothing but the device CA and its
# CRL; then the device boots again (a no-op).
# Installs what is missing; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/swtpm.sh
source scripts/lib/rabbitmq.sh
source scripts/lib/mosquitto.sh

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rmq_stop "$work/broker"
    mosq_stop "$work/mosquitto"
    pg_stop "$work"
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building"
cargo build --locked -q -p provisioning-service -p device-client
export PROVISIONING_SERVICE=$PWD/target/debug/provisioning-service DEVICE_CLIENT=$PWD/target/debug/device-client

echo "== starting Postgres, a software TPM and the service"
pg_start "$work" "$(free_port)"
# A port can be taken between choosing and binding it: try a few.
for attempt in 1 2 3 4 5; do
    tpm_port=$(free_port)
    scripts/run-swtpm.sh "$work/tpm" "$tpm_port" >"$work/swtpm.log" 2>&1 &
    tpm_pid=$!
    swtpm_wait_tcti "swtpm:host=127.0.0.1,port=$tpm_port" "$tpm_pid" && break
    wait "$tpm_pid" 2>/dev/null || true
    [[ $attempt -lt 5 ]] || { cat "$work/swtpm.log" >&2; exit 1; }
done
pids+=("$tpm_pid")
service_port=$(free_port) hooks_port=$(free_port)
# The hub is the broker on this machine, so its host name is localhost; the enrollment API's
# tokens name the service by another (a hub named like the service is refused: its back ends'
# tokens would open the enrollment API).
export DPS_SERVICE_HOST_NAME=dps.localhost
DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$service_port DPS_ID_SCOPE=0ne00DEMO01 \
    DPS_IOT_HUBS=localhost DPS_HUB_AUTH_LISTEN=127.0.0.1:$hooks_port \
    scripts/run-service.sh >"$work/service.log" 2>&1 &
pids+=($!)
export DPS_ENDPOINT=https://localhost:$service_port DPS_ID_SCOPE=0ne00DEMO01
export DPS_CA_FILE=$work/secrets/ca.pem DPS_POLICY_FILE=$work/secrets/policies
export DPS_TCTI=swtpm:host=127.0.0.1,port=$tpm_port DPS_STATE_FILE=$work/device/state.json
for _ in $(seq 1 300); do
    curl -sf --cacert "$DPS_CA_FILE" "$DPS_ENDPOINT/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -sf --cacert "$DPS_CA_FILE" "$DPS_ENDPOINT/readyz" >/dev/null || { cat "$work/service.log" >&2; exit 1; }

echo "== the hub: a RabbitMQ node asking the service about every connect, and a back end watching"
broker_port=$(free_port)
mkdir -p "$work/broker"
(DPS_BROKER_DIR=$work/broker DPS_BROKER_PORT=$broker_port DPS_BROKER_TLS_DIR=$work/secrets DPS_BROKER_HUB=localhost \
    DPS_HUB_AUTH_URL=http://127.0.0.1:$hooks_port DPS_HUB_AUTH_SECRET_FILE=$work/secrets/hub-auth.secret \
    setsid scripts/run-broker.sh >"$work/broker/server.log" 2>&1 & echo $! >"$work/broker/rabbitmq.pid")
rmq_wait "$work/broker" "$broker_port"
export DPS_HUB_PORT=$broker_port DPS_HUB_CA_FILE=$work/secrets/ca.pem
"$PROVISIONING_SERVICE" hub-watch --hub localhost --access-policy-file "$work/secrets/policies" \
    --count 1 --ready-file "$work/watch.ready" >"$work/watch.out" 2>"$work/watch.log" &
watch_pid=$!
pids+=("$watch_pid")
for _ in $(seq 1 100); do [[ -f $work/watch.ready ]] && break; sleep 0.1; done

echo "== factory: read the EK, enroll it through the enrollment API (certificates under policy devices)"
"$DEVICE_CLIENT" ek
DPS_CREDENTIAL_POLICY_NAME=devices scripts/factory-enroll.sh

echo "== device, first boot: provision (with a CSR for a key in the TPM), then say hello to the hub"
start=$(date +%s%N)
DPS_CERTIFICATE=true DPS_HUB_AUTH=sas DPS_HUB_MESSAGE="hello from the TPM-held key" scripts/device-provision.sh
echo "   (provisioned and sent in $(( ($(date +%s%N) - start) / 1000000 )) ms)"
wait "$watch_pid" || { cat "$work/watch.log" >&2; exit 1; }
echo "== the back end received: $(cat "$work/watch.out")"

echo "== the device's certificate: mutual TLS to Mosquitto, the key never out of the TPM"
openssl x509 -in "$(dirname "$DPS_STATE_FILE")/certificate.pem" -noout -subject -issuer -enddate | sed 's/^/   /'
issuing=$work/secrets/issuing
mosquitto_port=$(free_port)
mkdir -p "$work/mosquitto"
(DPS_BROKER_DIR=$work/mosquitto DPS_BROKER_PORT=$mosquitto_port DPS_BROKER_TLS_DIR=$work/secrets \
    DPS_DEVICE_CA_FILE=$issuing/root.pem DPS_CRL_ISSUER_FILE=$issuing/issuing.pem \
    DPS_CRL_URL=$DPS_ENDPOINT/credentialPolicies/devices/crl \
    setsid scripts/run-mosquitto.sh >"$work/mosquitto/server.log" 2>&1 &)
for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$mosquitto_port") 2>/dev/null && break; sleep 0.1; done
# The back end: an independent MQTT client (mosquitto_sub) with its own certificate.
# Its client id is its name, so the broker's log shows when it has subscribed.
mosquitto_sub -h localhost -p "$mosquitto_port" --cafile "$DPS_CA_FILE" --cert "$issuing/hub-backend.pem" \
    --key "$issuing/hub-backend.key" -i hub-backend -t 'devices/+/messages/events/#' -C 1 -W 30 -v \
    >"$work/mosquitto-sub.out" &
sub_pid=$!
for _ in $(seq 1 100); do grep -q 'hub-backend 1 devices/+/messages/events/#' "$work/mosquitto/mosquitto.log" && break; sleep 0.1; done
"$DEVICE_CLIENT" send --auth certificate --hub-port "$mosquitto_port" --reregister-attempts 0 \
    --message "hello over mutual TLS" || { cat "$work/mosquitto/mosquitto.log" >&2; exit 1; }
wait "$sub_pid" || { cat "$work/mosquitto/mosquitto.log" >&2; exit 1; }
echo "== the back end received over Mosquitto: $(cat "$work/mosquitto-sub.out")"

echo "== device, second boot: already provisioned, nothing sent"
"$DEVICE_CLIENT" register
echo "== done"
