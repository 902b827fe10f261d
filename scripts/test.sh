#!/usr/bin/env bash
# The test command: installs what is missing, checks the container setup, runs the demo end to
# end, then every test of the workspace (unit tests with vectors; integration tests on a fresh
# swtpm and a fresh Postgres database each, end-to-end runs of the device-client binary).
# Stops everything it started. For a quicker loop on one crate or test, see scripts/quick-test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/swtpm.sh

echo "== docker-compose.yml is valid, and its entrypoints are scripts the demo runs"
docker-compose -f docker-compose.yml config -q
for script in $(grep -ho 'scripts/[a-z-]*\.sh' Dockerfile docker-compose.yml | grep -v demo.sh | sort -u); do
    grep -q "$script" scripts/demo.sh || { echo "$script is an entrypoint demo.sh does not run" >&2; exit 1; }
done

echo "== the demo"
demo_log=$(mktemp)
RUST_LOG=warn scripts/demo.sh 2>&1 | tee "$demo_log"
grep -q '"already_provisioned":false' "$demo_log"
grep -q '^already provisioned:' "$demo_log"
grep -q '^== the back end received: .*hello from the TPM-held key' "$demo_log"
grep -q '^== the back end received over Mosquitto: .*hello over mutual TLS' "$demo_log"
rm -f "$demo_log"

work=$(mktemp -d)
bus_pid=
cleanup() {
    [[ -z $bus_pid ]] || kill "$bus_pid" 2>/dev/null || true
    pg_stop "$work"
    rm -rf "$work"
}
trap cleanup EXIT
pg_start "$work" "$(free_port)"

echo "== cargo test"
cargo_log=$work/cargo-test.log
cargo test --workspace --locked 2>&1 | tee "$cargo_log"
# One closing line for the whole workspace (cargo ends on the last crate's doc-tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$cargo_log"

echo "== the device client's TPM tests again, through tpm2-abrmd (the user-space resource manager)"
# A private session bus for this run; each test's swtpm gets its own tpm2-abrmd on it
# (test-support/src/swtpm.rs).
{ read -r bus_address; read -r bus_pid; } < <(dbus-daemon --session --fork --print-address=1 --print-pid=1)
tabrmd_log=$work/tabrmd-test.log
DBUS_SESSION_BUS_ADDRESS=$bus_address DPS_TEST_TABRMD=1 cargo test -p device-client --locked 2>&1 | tee "$tabrmd_log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "through tpm2-abrmd: %d passed, %d failed\n", p, f }' "$tabrmd_log"
kill "$bus_pid"
bus_pid=

echo "== fuzz smoke: every parser of outside input, 20 s each from the seed corpora"
FUZZ_DEV=1 scripts/fuzz.sh 20

