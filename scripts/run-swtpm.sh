#!/usr/bin/env bash
# Serves a software TPM in the foreground: manufactures one in STATE_DIR first if there is none.
# Usage: run-swtpm.sh STATE_DIR PORT   (control channel on PORT+1; SWTPM_BIND, default 127.0.0.1)
set -euo pipefail
dir=$1 port=$2 bind=${SWTPM_BIND:-127.0.0.1}
source "$(dirname "$0")/lib/swtpm.sh"
[[ -f $dir/state/tpm2-00.permall ]] || swtpm_manufacture "$dir"
exec swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
    --server "type=tcp,port=$port,bindaddr=$bind" \
    --ctrl "type=tcp,port=$((port + 1)),bindaddr=$bind" \
    --flags not-need-init,startup-clear
