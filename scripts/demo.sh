#!/usr/bin/env bash
# The main job: one device's DPS TPM handshake, end to end on a real (software) TPM.
# Installs what is missing, manufactures a swtpm, lets the service side build an
# authenticationKey blob for that TPM's EK and SRK in software, imports it into the TPM, signs
# a SAS token inside the TPM and verifies it as the service would. Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/swtpm.sh

work=$(mktemp -d)
cleanup() {
    swtpm_stop "$work"
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked -q -p device-client --example handshake
swtpm_manufacture "$work"
port=$(free_port)
swtpm_serve "$work" "$port"
TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port" target/debug/examples/handshake
