#!/usr/bin/env bash
# What the parts of a registration cost at the least on this machine, next to which
# scripts/bench.sh's CPU per registration can be read: Postgres CPU per minimal prepared
# statement (pgbench: `SELECT 1`, a one-row upsert like the throttle's, and that upsert four to
# a pipeline), and the service's CPU per full TLS 1.3 handshake (openssl s_time, one connection
# at a time) and per HTTP request on an open connection (curl, GET /healthz, no database). The
# RSA and SAS floors are criterion's: cargo bench -p dps-protocol --bench crypto. On demand,
# not in CI.
#   scripts/floors.sh [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/ports.sh

source scripts/lib/scratch.sh

cargo build --release --locked -q -p provisioning-service
pg_start "$work" "$(free_port)"
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per_op() { awk -v t="$1" -v n="$2" -v hz="$hz" 'BEGIN { printf "%.3f", t / hz * 1000 / n }'; }

psql -q "$DATABASE_URL" -c "CREATE UNLOGGED TABLE floor (k int PRIMARY KEY, n int NOT NULL)" \
    -c "INSERT INTO floor SELECT g, 0 FROM generate_series(1, 1000) g"
echo 'SELECT 1;' >"$work/select.sql"
upsert='INSERT INTO floor VALUES (:k, 1) ON CONFLICT (k) DO UPDATE SET n = floor.n + 1;'
printf '\\set k random(1, 1000)\n%s\n' "$upsert" >"$work/upsert.sql"
# The same upsert, four at a time in one pipeline (one round trip and one commit for four):
# what sending several devices' statements together could save at most.
printf '\\set k random(1, 997)\n\\startpipeline\n%s\n%s\n%s\n%s\n\\endpipeline\n' "$upsert" \
    "${upsert/:k,/:k + 1,}" "${upsert/:k,/:k + 2,}" "${upsert/:k,/:k + 3,}" >"$work/pipelined.sql"
echo "floors, $seconds s each, $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1))"
# Four clients at 1,000 statements/s in all: each backend sleeps between statements, as the
# service's do at a few hundred registrations/s.
for run in "select:1:one SELECT 1" "upsert:1:one upsert" "pipelined:4:one upsert, four to a pipeline"; do
    IFS=: read -r script per label <<<"$run"
    before=$(pg_cpu_ticks "$work")
    out=$(pgbench -n -M prepared -c 4 -j 1 -R $((1000 / per)) -T "$seconds" -f "$work/$script.sql" "$DATABASE_URL" 2>&1)
    used=$(($(pg_cpu_ticks "$work") - before))
    n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    printf '  %-52s %s ms Postgres CPU\n' "Postgres, $label (pgbench)" "$(per_op "$used" $((n * per)))"
done

port=$(free_port)
RUST_LOG=warn DPS_SECRETS_DIR=$work/secrets DPS_LISTEN=127.0.0.1:$port DPS_ID_SCOPE=0ne00FLOOR DPS_IOT_HUBS=hub.example \
    PROVISIONING_SERVICE=$PWD/target/release/provisioning-service scripts/run-service.sh >"$work/service.log" 2>&1 &
pids+=($!)
url=https://localhost:$port
for _ in $(seq 1 300); do curl -sf --cacert "$work/secrets/ca.pem" "$url/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
service=$(pgrep -f "^$PWD/target/release/provisioning-service serve" | head -1)
[[ -n $service ]] || { cat "$work/service.log" >&2; exit 1; }

before=$(ticks "$service")
out=$(openssl s_time -connect "127.0.0.1:$port" -new -time "$seconds" -CAfile "$work/secrets/ca.pem" 2>&1)
used=$(($(ticks "$service") - before))
n=$(sed -n 's/^\([0-9]*\) connections in [0-9.]* real.*/\1/p' <<<"$out" | head -1)
printf '  %-52s %s ms service CPU\n' "service, one full TLS 1.3 handshake" "$(per_op "$used" "$n")"

requests=$((seconds * 500))
before=$(ticks "$service")
curl -sf --cacert "$work/secrets/ca.pem" -o /dev/null "$url/healthz?n=[1-$requests]"
used=$(($(ticks "$service") - before))
printf '  %-52s %s ms service CPU\n' "service, one HTTP request on an open connection" "$(per_op "$used" "$requests")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
