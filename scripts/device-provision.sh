#!/usr/bin/env bash
# The device at first boot: provision (a no-op when already provisioned), show a hub SAS token
# signed inside the TPM, and, when DPS_HUB_MESSAGE is set, send it to the assigned hub.
# Environment: DPS_ENDPOINT, DPS_ID_SCOPE, DPS_CA_FILE, DPS_STATE_FILE, DPS_TCTI (see
# `device-client register --help`); DPS_HUB_PORT, DPS_HUB_CA_FILE (`device-client send --help`);
# with DPS_MTLS_HUB_HOST and DPS_MTLS_HUB_PORT, the message goes over mutual TLS with the
# device's certificate to that broker too.
set -euo pipefail
device_client=${DEVICE_CLIENT:-device-client}
source "$(dirname "$0")/lib/swtpm.sh"
swtpm_wait_tcti "${DPS_TCTI:-}"
result=$("$device_client" register --json "$@")
echo "$result"
hub=$(printf '%s' "$result" | sed -n 's/.*"assigned_hub":"\([^"]*\)".*/\1/p')
device=$(printf '%s' "$result" | sed -n 's/.*"device_id":"\([^"]*\)".*/\1/p')
token=$("$device_client" sas --resource "$hub/devices/$device" --ttl 3600)
echo "hub SAS token (signed in the TPM): ${token:0:60}..."
if [[ -n ${DPS_HUB_MESSAGE:-} ]]; then
    "$device_client" send --message "$DPS_HUB_MESSAGE"
fi
if [[ -n ${DPS_HUB_MESSAGE:-} && -n ${DPS_MTLS_HUB_HOST:-} ]]; then
    "$device_client" send --auth certificate --hub-host "$DPS_MTLS_HUB_HOST" \
        --hub-port "${DPS_MTLS_HUB_PORT:-8883}" --message "$DPS_HUB_MESSAGE (mutual TLS)"
fi
