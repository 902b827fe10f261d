#!/usr/bin/env bash
# Benchmark of the brokers' auth hook: EMQX-format connect checks of one provisioned device's
# valid hub token, as fast as wrk can send them, with the CPU each costs the service and the
# Postgres cluster (utime+stime from /proc, exited children included). On demand, not in CI.
#   scripts/bench-hub-auth.sh [CONNECTIONS=32] [SECONDS=15]
# BENCH_SERVICE measures another provisioning-service binary (an older build, to compare).
set -euo pipefail
cd "$(dirname "$0")/.."
conns=${1:-32} seconds=${2:-15}
scripts/install-deps.sh
command -v wrk >/dev/null || { sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo); "${sudo_cmd[@]}" apt-get install -y -qq wrk; }
source scripts/lib/postgres.sh
source scripts/lib/swtpm.sh

source scripts/lib/scratch.sh

cargo build --release --locked -q -p provisioning-service -p device-client
service=${BENCH_SERVICE:-$PWD/target/release/provisioning-service} device=$PWD/target/release/device-client
pg_start "$work" "$(free_port)"
tpm_port=$(free_port) service_port=$(free_port) hooks_port=$(free_port)
scripts/run-swtpm.sh "$work/tpm" "$tpm_port" >"$work/swtpm.log" 2>&1 &
tpm_pid=$!
pids+=("$tpm_pid")
export DPS_SERVICE_HOST_NAME=dps.localhost
RUST_LOG=warn DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$service_port DPS_ID_SCOPE=0ne00BENCH \
    DPS_IOT_HUBS=localhost DPS_HUB_AUTH_LISTEN=127.0.0.1:$hooks_port PROVISIONING_SERVICE=$service \
    scripts/run-service.sh >"$work/service.log" 2>&1 &
service_pid=$!
pids+=("$service_pid")
export DPS_TCTI=swtpm:host=127.0.0.1,port=$tpm_port DPS_ENDPOINT=https://localhost:$service_port \
    DPS_ID_SCOPE=0ne00BENCH DPS_CA_FILE=$work/secrets/ca.pem DPS_POLICY_FILE=$work/secrets/policies \
    DPS_STATE_FILE=$work/state.json DEVICE_CLIENT=$device RUST_LOG=error
swtpm_wait_tcti "$DPS_TCTI" "$tpm_pid"
for _ in $(seq 1 300); do curl -sf --cacert "$DPS_CA_FILE" "$DPS_ENDPOINT/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
scripts/factory-enroll.sh >/dev/null
id=$("$device" register --json | sed -n 's/.*"device_id":"\([^"]*\)".*/\1/p')
token=$("$device" sas --resource "localhost/devices/$id" --ttl 3000)
printf '{"clientid":"%s","username":"localhost/%s/?api-version=2021-04-12","password":"%s","peerhost":"127.0.0.1"}' \
    "$id" "$id" "$token" >"$work/body.json"
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local f = io.open("$work/body.json"); wrk.body = f:read("*a"); f:close()
LUA
url=http://127.0.0.1:$hooks_port/$(cat "$work/secrets/hub-auth.secret")/hubs/localhost/emqx/authn
curl -sf -XPOST -H 'content-type: application/json' --data @"$work/body.json" "$url" | grep -q '"result":"allow"'

# The service process is run-service.sh's exec.
cpu() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
s0=$(cpu "$service_pid") p0=$(pg_cpu_ticks "$work")
wrk -t2 -c"$conns" -d"${seconds}s" -s "$work/post.lua" "$url" >"$work/wrk.out"
s1=$(cpu "$service_pid") p1=$(pg_cpu_ticks "$work")
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
hz=$(getconf CLK_TCK)
echo "hub connect checks: $(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")/s over $requests calls, $conns connections"
echo "CPU per check: service $(( (s1 - s0) * 1000000 / hz / requests )) us, Postgres $(( (p1 - p0) * 1000000 / hz / requests )) us"
grep -E 'Latency|Non-2xx' "$work/wrk.out"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
