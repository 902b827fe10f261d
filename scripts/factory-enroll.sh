#!/usr/bin/env bash
# The factory station: reads the device's EK from its TPM and enrolls it through the enrollment
# API, authenticated with a service SAS made from a shared access policy.
# Environment: DPS_ENDPOINT, DPS_CA_FILE, DPS_SERVICE_HOST_NAME (the sr, default localhost),
# DPS_POLICY_FILE (name=base64key lines; the first is used), the TPM's DPS_TCTI, and
# DPS_CREDENTIAL_POLICY_NAME (optional: the credential policy the device's certificates are
# issued under).
set -euo pipefail
here=$(dirname "$0")
source "$here/lib/sas.sh"
device_client=${DEVICE_CLIENT:-device-client}
source "$(dirname "$0")/lib/swtpm.sh"
swtpm_wait_tcti "${DPS_TCTI:-}"
ek_json=$("$device_client" ek --json)
registration_id=$(printf '%s' "$ek_json" | sed -n 's/.*"registrationId":"\([^"]*\)".*/\1/p')
endorsement_key=$(printf '%s' "$ek_json" | sed -n 's/.*"endorsementKey":"\([^"]*\)".*/\1/p')
policy_line=$(grep -v '^#' "${DPS_POLICY_FILE:?}" | head -1)
token=$(service_sas "${DPS_SERVICE_HOST_NAME:-localhost}" "${policy_line%%=*}" "${policy_line#*=}" 300)
credential_policy=${DPS_CREDENTIAL_POLICY_NAME:+,\"credentialPolicyName\":\"$DPS_CREDENTIAL_POLICY_NAME\"}
body=$(printf '{"registrationId":"%s","attestation":{"type":"tpm","tpm":{"endorsementKey":"%s"}},"provisioningStatus":"enabled"%s}' \
    "$registration_id" "$endorsement_key" "$credential_policy")
status=$(curl -sS -o /dev/stderr -w '%{http_code}' --cacert "${DPS_CA_FILE:?}" -X PUT \
    -H "Authorization: $token" -H 'Content-Type: application/json' \
    "${DPS_ENDPOINT:?}/enrollments/$registration_id?api-version=2021-10-01" -d "$body" 2>/dev/null)
[[ $status == 200 ]] || { echo "enrollment of $registration_id failed: HTTP $status" >&2; exit 1; }
echo "enrolled $registration_id"
