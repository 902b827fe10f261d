#!/usr/bin/env bash
# The inner loop: `cargo test` with your arguments, no apt, no compose check, no demo.
#   scripts/quick-test.sh -p provisioning-service --test it abuse
#   scripts/quick-test.sh -p dps-protocol
# Uses the Postgres in $DATABASE_URL (a superuser URL: each test creates its own database); if
# it is unset, starts an ephemeral cluster for this run and stops it afterwards. swtpm and
# libtss2 must be installed (scripts/install-deps.sh). CI runs scripts/test.sh, not this.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${DATABASE_URL:-} ]]; then
    source scripts/lib/postgres.sh
    source scripts/lib/swtpm.sh
    work=$(mktemp -d)
    trap 'pg_stop "$work"; rm -rf "$work"' EXIT
    pg_start "$work" "$(free_port)"
    echo "ephemeral Postgres at $DATABASE_URL" >&2
fi
cargo test "$@"
