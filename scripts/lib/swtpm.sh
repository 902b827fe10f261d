# Functions to manufacture and serve a software TPM (swtpm). Source this file.

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

# swtpm_serve DIR PORT: serves DIR/state on 127.0.0.1:PORT (control on PORT+1) in the
# background, waits until it accepts connections, and records its pid in DIR/swtpm.pid.
swtpm_serve() {
    local dir=$1 port=$2
    swtpm socket --tpm2 --tpmstate "dir=$dir/state" \
        --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
        --flags not-need-init,startup-clear >"$dir/swtpm.log" 2>&1 &
    echo $! >"$dir/swtpm.pid"
    local i
    for i in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$((port + 1))") 2>/dev/null; then
            return 0
        fi
        kill -0 "$(cat "$dir/swtpm.pid")" 2>/dev/null || break
        sleep 0.05
    done
    echo "swtpm did not start on port $port" >&2
    cat "$dir/swtpm.log" >&2
    return 1
}

# swtpm_stop DIR: stops the simulator started by swtpm_serve.
swtpm_stop() {
    local dir=$1
    [[ -f $dir/swtpm.pid ]] || return 0
    kill "$(cat "$dir/swtpm.pid")" 2>/dev/null || true
    wait "$(cat "$dir/swtpm.pid")" 2>/dev/null || true
    rm -f "$dir/swtpm.pid"
}

# free_port: a loopback port that, with its successor, nothing listens on. Drawn below Linux's
# ephemeral range (32768+), where outgoing connections could already hold it.
free_port() {
    local p _
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
            ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    echo "no free port pair found" >&2
    return 1
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
