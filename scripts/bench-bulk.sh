#!/usr/bin/env bash
# The bulk import benchmark: N synthetic enrollments (dps-enrollments) through
# `provisioning-service bulk-enroll` into an ephemeral Postgres (the test settings), then the
# same file again (idempotent: nothing changes), then the p50/p99 of enrollment lookups by
# registration id at that size. On demand, not in CI.
#   scripts/bench-bulk.sh [N=1000000]
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000000}
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/ports.sh

source scripts/lib/scratch.sh

cargo build --release --locked -q -p provisioning-service -p loadgen
pg_start "$work" "$(free_port)"
target/release/dps-enrollments "$count" >"$work/enrollments.csv"
target/release/provisioning-service migrate >/dev/null
import() {
    local started=$SECONDS
    /usr/bin/time -f "%e s elapsed, %U s user, %S s system (bulk-enroll)" \
        target/release/provisioning-service bulk-enroll --quiet "$work/enrollments.csv"
    echo "  $(( (SECONDS - started) )) s wall for $count lines"
}
echo "== first import"; import
echo "== the same file again"; import
echo "== lookups by registration id at this size"
psql -X -q "$DATABASE_URL" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
for i in $(seq 1 2000); do
    printf "SELECT * FROM enrollments WHERE registration_id = 'bulk-%07d';\n" $((RANDOM * 32768 % count + RANDOM % count))
done >"$work/lookups.sql"
psql -X -q "$DATABASE_URL" -c "SELECT pg_stat_statements_reset()" >/dev/null
psql -X -q "$DATABASE_URL" -f "$work/lookups.sql" >/dev/null
psql -X -A -t "$DATABASE_URL" -c "SELECT format('%s lookups: mean %s ms, max %s ms (server side)', calls,
    round(mean_exec_time::numeric, 3), round(max_exec_time::numeric, 3))
    FROM pg_stat_statements WHERE query LIKE 'SELECT * FROM enrollments WHERE registration_id%'"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
