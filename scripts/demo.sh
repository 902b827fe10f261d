#!/usr/bin/env bash
# The main job, on one machine: an ephemeral Postgres, a manufactured software TPM, the
# provisioning service with a throwaway CA, a factory enrolling the device's EK through the
# enrollment API, and the device provisioning itself; then the device boots again (a no-op).
# Installs what is missing; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/swtpm.sh

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
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
service_port=$(free_port)
DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$service_port DPS_ID_SCOPE=0ne00DEMO01 \
    DPS_IOT_HUBS=hub-1.demo.example,hub-2.demo.example \
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

echo "== factory: read the EK, enroll it through the enrollment API"
"$DEVICE_CLIENT" ek
scripts/factory-enroll.sh

echo "== device, first boot: provision"
start=$(date +%s%N)
scripts/device-provision.sh
echo "   (provisioned in $(( ($(date +%s%N) - start) / 1000000 )) ms, including the hub SAS)"

echo "== device, second boot: already provisioned, nothing sent"
"$DEVICE_CLIENT" register
echo "== done"
