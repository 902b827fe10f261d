#!/usr/bin/env bash
# The service's load benchmark: release builds, an ephemeral Postgres (the test settings), one
# and two service instances, and dps-loadgen's software TPM devices registering over HTTPS
# (challenge, SAS register; a poll only if told `assigning`), fresh TLS connection per device
# unless stated. Prints one
# table: registrations/s, p50/p99 per leg, CPU ms per registration of the service process(es)
# and of the Postgres cluster (from /proc), 5xx answers, failures; then the load average.
# On demand, not in CI.
#   scripts/bench.sh [SECONDS_PER_RUN=10] [DEVICES=2000]
# BENCH_ROWS picks rows, as INSTANCES:CONCURRENCY:CONNECTIONS[:RATE] words (RATE: registrations
# started per second, steady, to compare CPU per registration at one offered load), e.g.
#   BENCH_ROWS="1:256:fresh 2:256:fresh" scripts/bench.sh 60
#   BENCH_ROWS="1:64:fresh:200 1:64:keep-alive:200" scripts/bench.sh 20
# BENCH_LOG is the services' RUST_LOG (default warn; info adds a line per assignment).
# BENCH_SERVICE measures another provisioning-service binary (an older build, to compare).
# BENCH_CSR=1 makes every registration issue a certificate: an issuing PKI made with OpenSSL
# (ECDSA P-384 root and issuing CA), a credential policy naming it, and a CSR per device
# (dps-loadgen --csr-policy); BENCH_CSR=P-256 does the same with P-256 CAs and device keys.
# BENCH_ATTEST=1 makes the fleet attest (dps-loadgen --attest: an attestation key per device, a
# quote per registration, enrollments with attestationPolicy require).
# BENCH_EK=ecc-p256 (or ecc-p384) gives the fleet ECC EKs (dps-loadgen --ek-type; registration
# ids prefixed by the type, so each type has its own enrollments). BENCH_CHALLENGE=1 runs only
# the challenge leg (dps-loadgen --challenge-only), to compare what an EK type costs there.
# BENCH_STATEMENTS=1 prints, after each row, what Postgres spent it on: the top BENCH_TOP
# (default 6) statements by execution time (pg_stat_statements: calls, mean ms, plans and mean
# planning ms if pg_stat_statements.track_planning is on, buffers read per call) and each
# table's sequential and index scans. BENCH_PG_EXTRA is one more statement to run before each
# row, e.g. "ALTER SYSTEM SET pg_stat_statements.track = 'all'" to count the statements inside
# put_challenge too.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10} devices=${2:-2000}
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/ports.sh

source scripts/lib/scratch.sh

cargo build --release --locked -q -p provisioning-service -p loadgen
service=${BENCH_SERVICE:-$PWD/target/release/provisioning-service} loadgen=$PWD/target/release/dps-loadgen
pg_start "$work" "$(free_port)"
postmaster=$(head -1 "$work/pgdata/postmaster.pid")

if [[ -n ${BENCH_CSR:-} ]]; then
    source scripts/lib/pki.sh
    if [[ $BENCH_CSR == P-256 ]]; then
        pki_issuing "$work/issuing" P-256 '["ecdsa-p256"]' false
    else
        pki_issuing "$work/issuing" P-384 '["ecdsa-p384"]' false
    fi
    export DPS_CREDENTIAL_POLICY_FILE=$work/issuing/policies.json
fi

# Two instances on one database, sharing secrets (the first creates them). The per-address
# throttles are lifted: every device here comes from 127.0.0.1.
urls=() service_pids=()
for i in 1 2; do
    port=$(free_port)
    RUST_LOG=${BENCH_LOG:-warn} DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$port DPS_ID_SCOPE=0ne00BENCH \
        DPS_IOT_HUBS=hub-1.example,hub-2.example DPS_REGISTRATION_RATE=1000000000 DPS_POLL_RATE=1000000000 \
        PROVISIONING_SERVICE=$service scripts/run-service.sh >"$work/service-$i.log" 2>&1 &
    pids+=($!) service_pids+=($!) urls+=("https://localhost:$port")
    for _ in $(seq 1 300); do curl -sf --cacert "$work/secrets/ca.pem" "${urls[-1]}/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf --cacert "$work/secrets/ca.pem" "${urls[-1]}/readyz" >/dev/null || { cat "$work/service-$i.log" >&2; exit 1; }
done

common=(--id-scope 0ne00BENCH --ca-file "$work/secrets/ca.pem" --devices "$devices")
[[ -n ${BENCH_ATTEST:-} ]] && common+=(--attest)
[[ -n ${BENCH_CSR:-} ]] && common+=(--csr-policy devices)
[[ ${BENCH_CSR:-} == P-256 ]] && common+=(--csr-p256)
[[ -n ${BENCH_EK:-} ]] && common+=(--ek-type "$BENCH_EK" --prefix "$BENCH_EK")
"$loadgen" "${common[@]}" --url "${urls[0]}" --enroll-with-policy-file "$work/secrets/policies" \
    --concurrency 8 --count 1 >/dev/null
# A warm-up, so that every instance has its pool and caches filled.
"$loadgen" "${common[@]}" --url "${urls[0]}" --url "${urls[1]}" --concurrency 8 --count 200 >/dev/null

run() { # INSTANCES CONCURRENCY CONNECTIONS [RATE]
    local n=$1 targets=() watch=() rate=()
    for ((i = 0; i < n; i++)); do targets+=(--url "${urls[$i]}") watch+=(--service-pid "${service_pids[$i]}"); done
    [[ -n ${4:-} ]] && rate=(--rate "$4")
    "$loadgen" "${common[@]}" "${targets[@]}" "${watch[@]}" "${rate[@]}" --postgres-pid "$postmaster" \
        --concurrency "$2" --connections "$3" --duration "$seconds" --output row \
        ${BENCH_CHALLENGE:+--challenge-only}
}

echo "dps-loadgen, $seconds s per run, $devices devices, $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1))"
"$loadgen" --row-header
# Every row re-registers the same devices, hundreds of times a minute each, so the tables and
# their indexes fill with dead row versions faster than autovacuum's one-minute nap clears them:
# each row starts from a vacuumed database, and one and two instances alternate, so that no row
# pays for the ones before it.
# The last four rows offer each instance the same steady load (150 registrations a second on
# one, 300 on two), so that their CPU per registration shows what two instances on one
# database cost each other, apart from how busy each is.
rows=${BENCH_ROWS:-"1:1:fresh 2:1:fresh 1:8:fresh 2:8:fresh 1:32:fresh 2:32:fresh
    1:128:fresh 2:128:fresh 1:256:fresh 2:256:fresh 1:32:keep-alive 2:32:keep-alive
    1:64:fresh:150 2:128:fresh:300 1:64:keep-alive:150 2:128:keep-alive:300"}
for row in $rows; do
    IFS=: read -r n c conn rate <<<"$row"
    psql -q "$DATABASE_URL" -c VACUUM
    if [[ -n ${BENCH_STATEMENTS:-} ]]; then
        psql -qAt "$DATABASE_URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" \
            -c "SELECT pg_stat_statements_reset()" -c "SELECT pg_stat_reset()" -c "${BENCH_PG_EXTRA:-SELECT 1}" -c "SELECT pg_reload_conf()" >/dev/null
    fi
    run "$n" "$c" "$conn" "$rate"
    [[ -z ${BENCH_STATEMENTS:-} ]] || psql -q "$DATABASE_URL" \
        -c "SELECT calls, round(mean_exec_time::numeric, 3) AS mean_ms, plans,
                   round(mean_plan_time::numeric, 3) AS plan_ms,
                   (shared_blks_hit + shared_blks_read) / greatest(calls, 1) AS buffers,
                   left(regexp_replace(query, '\s+', ' ', 'g'), 70) AS statement
            FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT ${BENCH_TOP:-6}" \
        -c "SELECT relname AS table, seq_scan, idx_scan, n_dead_tup AS dead,
                   pg_relation_size(relid) / 8192 AS pages
            FROM pg_stat_user_tables ORDER BY relname"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
