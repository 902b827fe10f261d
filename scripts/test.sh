#!/usr/bin/env bash
# The test command: installs what is missing, starts an ephemeral PostgreSQL on loopback, runs
# every test of the workspace (unit tests with vectors; integration tests on a fresh swtpm and a
# fresh database per test), and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/lib/postgres.sh
source scripts/lib/swtpm.sh

work=$(mktemp -d)
cleanup() {
    pg_stop "$work"
    rm -rf "$work"
}
trap cleanup EXIT
pg_start "$work" "$(free_port)"

cargo test --workspace --locked
