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

# pki_issuing DIR [CURVE] [KEY_TYPES] [TPM_ONLY]: an operator's device PKI for certificate
# issuance in DIR: a root and an issuing CA under it (ECDSA CURVE, default P-384: root.pem,
# issuing.pem, issuing.key), and policies.json naming them as credential policy "devices",
# which accepts KEY_TYPES (a JSON list, default ["ecdsa-p384", "ecdsa-p256"]), from keys proven
# to live in a TPM unless TPM_ONLY is false.
pki_issuing() {
    local dir=$1 curve=${2:-P-384} key_types=${3:-'["ecdsa-p384", "ecdsa-p256"]'} tpm_only=${4:-true}
    local ca_ext='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n'
    mkdir -p "$dir"
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" -out "$dir/root.key" 2>/dev/null &&
        openssl genpkey -algorithm EC -pkeyopt "ec_paramgen_curve:$curve" -out "$dir/issuing.key" 2>/dev/null)
    openssl req -x509 -new -key "$dir/root.key" -subj "/CN=dps-tpm demo device root" -days 30 -out "$dir/root.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -new -key "$dir/issuing.key" -subj "/CN=dps-tpm demo issuing CA" |
        openssl x509 -req -CA "$dir/root.pem" -CAkey "$dir/root.key" -days 30 -out "$dir/issuing.pem" 2>/dev/null \
            -extfile <(printf "$ca_ext")
    printf '[{"name": "devices", "issuingCertificate": "issuing.pem", "issuingKey": "issuing.key", "chainCertificates": ["root.pem"], "keyTypes": %s, "requireTpmResidentKey": %s}]\n' \
        "$key_types" "$tpm_only" >"$dir/policies.json"
}

# pki_client DIR CN: a client certificate DIR/CN.pem (with the issuing CA after it) and key
# DIR/CN.key from the issuing CA in DIR, for an application that is not a device (a back end).
pki_client() {
    local dir=$1 cn=$2
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$cn" \
        -keyout "$dir/$cn.key" 2>/dev/null |
        openssl x509 -req -CA "$dir/issuing.pem" -CAkey "$dir/issuing.key" -days 2 -out "$dir/$cn.pem" 2>/dev/null \
            -extfile <(printf 'basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n')
    cat "$dir/issuing.pem" >>"$dir/$cn.pem"
}
