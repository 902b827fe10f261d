# Service SAS tokens for the enrollment API, with openssl (what a factory script would do).
# Source this file.

# urlencode_b64 S: percent-encodes the characters base64 uses that a URL may not carry.
urlencode_b64() {
    printf '%s' "$1" | sed -e 's/+/%2B/g' -e 's|/|%2F|g' -e 's/=/%3D/g'
}

# service_sas HOST POLICY KEY_BASE64 TTL: `SharedAccessSignature sr=..&sig=..&se=..&skn=POLICY`,
# the string-to-sign being lowercase(HOST) "\n" expiry, signed with HMAC-SHA256 under the key.
service_sas() {
    local host=$1 policy=$2 key_b64=$3 ttl=$4 sr se key_hex sig
    sr=$(printf '%s' "$host" | tr '[:upper:]' '[:lower:]')
    se=$(($(date +%s) + ttl))
    key_hex=$(printf '%s' "$key_b64" | base64 -d | xxd -p -c 256)
    sig=$(printf '%s\n%s' "$sr" "$se" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key_hex" -binary | base64 -w0)
    printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s' "$sr" "$(urlencode_b64 "$sig")" "$se" "$policy"
}
