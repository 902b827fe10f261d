# Functions to manufacture a software TPM (swtpm), find free ports and wait for a simulator
# (`scripts/run-swtpm.sh` serves one). Source this file.

source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"

# swtpm_manufacture DIR: a new TPM state in DIR/state with a persisted RSA EK and an EK
# certificate from swtpm's local CA (kept in DIR/ca), without touching /var/lib.
swtpm_manufacture() {
    local dir=$1
    mkdir -p "$dir/state" "$dir/ca"
    cat >"$dir/swtpm-localca.conf" <<CONF
statedir = $dir/ca
signingkey = $dir/ca/signkey.pem
issuercert = $dir/ca/issuercert.pem
certserial = $dir/ca/certserial
CONF
    cat >"$dir/swtpm_setup.conf" <<CONF
create_certs_tool = /usr/bin/swtpm_localca
create_certs_tool_config = $dir/swtpm-localca.conf
CONF
    swtpm_setup --tpm2 --tpmstate "$dir/state" --config "$dir/swtpm_setup.conf" \
        --createek --create-ek-cert --overwrite >"$dir/setup.log" 2>&1 || {
        cat "$dir/setup.log" >&2
        return 1
    }
}

# swtpm_wait_tcti TCTI [PID]: for a swtpm:host=H,port=P TCTI, waits (up to 30 s) until the
# simulator accepts connections on its control port, failing at once if process PID is gone;
# any other TCTI returns at once.
swtpm_wait_tcti() {
    local tcti=$1 pid=${2:-} host port _
    [[ $tcti == swtpm:* ]] || return 0
    host=$(printf '%s' "$tcti" | sed -n 's/.*host=\([^,]*\).*/\1/p')
    port=$(printf '%s' "$tcti" | sed -n 's/.*port=\([0-9]*\).*/\1/p')
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/${host:-127.0.0.1}/$((${port:-2321} + 1))") 2>/dev/null && return 0
        [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    echo "no swtpm at $tcti" >&2
    return 1
}
