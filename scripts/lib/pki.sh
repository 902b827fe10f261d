# A throwaway PKI for the demo: a CA and a server certificate for localhost/127.0.0.1 (rustls
# refuses a CA certificate used as a server certificate, so there are two). Source this file.

# pki_make DIR [SANS]: writes DIR/ca.pem, DIR/server.pem and DIR/server.key; SANS adds
# subjectAltNames (for example DNS:provisioning-service) to localhost and 127.0.0.1.
pki_make() {
    local dir=$1 extra=${2:-}
    mkdir -p "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=dps-tpm demo CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
    pki_issue "$dir" server "$extra"
}

# pki_issue DIR NAME [SANS]: a server certificate DIR/NAME.pem with key DIR/NAME.key, signed by
# the CA in DIR, for localhost/127.0.0.1 and SANS.
pki_issue() {
    local dir=$1 name=$2 extra=${3:-}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=localhost" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 2 -out "$dir/$name.pem" -extfile <(printf '%s\n' \
            "basicConstraints=critical,CA:FALSE" \
            "subjectAltName=DNS:localhost,IP:127.0.0.1${extra:+,$extra}" \
            "extendedKeyUsage=serverAuth" \
            "keyUsage=critical,digitalSignature") 2>/dev/null
    rm -f "$dir/$name.csr"
}
