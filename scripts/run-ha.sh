#!/usr/bin/env bash
# The high-availability topology with one command, on loopback in a temporary directory: one
# etcd, two Postgres 15 nodes under Patroni (synchronous replication), HAProxy routing to the
# primary, and two service instances connected through HAProxy. Runs until interrupted (Ctrl-C)
# or for HA_SECONDS; everything it started is stopped on exit. From another shell, fail the
# primary over with the commands it prints. docs/operations.md describes the topology.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/ha.sh
source scripts/lib/scratch.sh
trap 'ha_stop "$work/ha"; scratch_cleanup' EXIT
# Patroni and Postgres run as the postgres user when root: they must reach $work/ha.
chmod a+x "$work"

cargo build --release --locked -q -p provisioning-service
ha_start "$work/ha"
DATABASE_URL=$(ha_env "$work/ha" DATABASE_URL)
export DATABASE_URL
for i in 1 2; do
    port=$(free_port)
    DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$port \
        PROVISIONING_SERVICE=$PWD/target/release/provisioning-service scripts/run-service.sh \
        >"$work/service-$i.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 300); do curl -sf --cacert "$work/secrets/ca.pem" "https://localhost:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    echo "service $i: https://localhost:$port (CA $work/secrets/ca.pem, log $work/service-$i.log)"
done
primary=$(ha_primary "$work/ha")
echo "database: $DATABASE_URL (HAProxy); primary: $primary; Patroni logs: $work/ha/node*/patroni.log"
echo "fail over: kill -9 \$(head -1 $work/ha/$primary/data/postmaster.pid)"
echo "        or kill -9 \$(cat $work/ha/$primary/patroni.pid)"
if [[ -n ${HA_SECONDS:-} ]]; then sleep "$HA_SECONDS"; else wait; fi
