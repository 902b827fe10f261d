# A scratch directory ($work) for an on-demand script, and the processes it starts there ($pids,
# append to it) and the Postgres cluster pg_start may put in it: all stopped, and the directory
# removed, when the script exits. Source this file after postgres.sh.
work=$(mktemp -d)
pids=()
scratch_cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    pg_stop "$work"
    rm -rf "$work"
}
trap scratch_cleanup EXIT
