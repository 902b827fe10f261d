#!/usr/bin/env bash
# The test command: installs what is missing, then runs every test of the workspace (unit tests
# with vectors, integration tests on a fresh swtpm per test). Each test starts and stops its own
# simulator; nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked
