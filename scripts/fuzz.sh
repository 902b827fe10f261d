#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: each parser of outside input) for SECONDS each
# (default 60), starting from the committed seed corpora (fuzz/corpus, and the real EK
# certificates of ../shared/ek-certs for ek_certificate; new finds are written to
# a scratch copy, not committed). cargo-fuzz on the stable toolchain, as Debian 12 has it:
# RUSTC_BOOTSTRAP=1 and no sanitizer. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET/. FUZZ_DEV=1 builds unoptimised (quicker to build, slower to run: the
# test command's smoke run).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
targets=("$@")
if ((${#targets[@]} == 0)); then
    mapfile -t targets < <(cd fuzz/fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||')
fi
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export RUSTC_BOOTSTRAP=1
profile=()
[[ -z ${FUZZ_DEV:-} ]] || profile=(--dev)
cargo fuzz build "${profile[@]}" --sanitizer none
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target"
    cp fuzz/corpus/"$target"/* "$scratch/$target/" 2>/dev/null || true
    if [[ $target == ek_certificate ]]; then
        # Real vendor EK certificates, as found (framed, padded) and trimmed.
        for f in ../shared/ek-certs/*/ek.der ../shared/ek-certs/*/ek.as-found.bin ../shared/ek-certs/negative/*/ek.der; do
            [[ -f $f ]] && cp "$f" "$scratch/$target/$(echo "$f" | tr / _)"
        done
    fi
    log=$scratch/$target.log
    if ! cargo fuzz run "${profile[@]}" --sanitizer none "$target" "$scratch/$target" \
        -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $target crashed (input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "fuzz: $target: ${runs:-?} inputs in ${seconds} s, no crash"
done
