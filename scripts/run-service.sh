#!/usr/bin/env bash
# Runs the provisioning service in the foreground. Secrets live in DPS_SECRETS_DIR; any that are
# missing are created as throwaway ones: a demo CA and server certificate (DPS_TLS_SANS adds
# names to it), a service key, an enrollment API policy "provisioningserviceowner", the secret of
# the brokers' auth hooks (hub-auth.secret; the broker reads it from the same directory), and a
# device PKI for certificate issuance (issuing/: credential policy "devices", used unless
# DPS_CREDENTIAL_POLICY_FILE names another). Everything
# else comes from DATABASE_URL and the DPS_* variables `provisioning-service serve --help` lists.
set -euo pipefail
here=$(dirname "$0")
secrets=${DPS_SECRETS_DIR:?set DPS_SECRETS_DIR}
source "$here/lib/pki.sh"
mkdir -p "$secrets"
[[ -f $secrets/server.pem ]] || pki_make "$secrets" "${DPS_TLS_SANS:-}"
[[ -f $secrets/service.key ]] || (umask 077 && head -c 32 /dev/urandom | xxd -p -c 64 >"$secrets/service.key")
[[ -f $secrets/policies ]] || (umask 077 && echo "provisioningserviceowner=$(head -c 32 /dev/urandom | base64 -w0)" >"$secrets/policies")
[[ -f $secrets/hub-auth.secret ]] || (umask 077 && head -c 24 /dev/urandom | xxd -p -c 64 >"$secrets/hub-auth.secret")
[[ -f $secrets/issuing/policies.json ]] || pki_issuing "$secrets/issuing"
# The back end's certificate for the hub that takes certificate logins (Mosquitto).
[[ -f $secrets/issuing/hub-backend.pem ]] || pki_client "$secrets/issuing" hub-backend
export DPS_CREDENTIAL_POLICY_FILE=${DPS_CREDENTIAL_POLICY_FILE:-$secrets/issuing/policies.json}
# In containers (DPS_PUBLISH_DIR set), each other container gets only what it needs, in its own
# volume: devices the CA certificate; the operator's tools (factory, back ends) the CA, the
# access policies and the back end's client certificate; the brokers the CA, their server
# certificate and key (DPS_BROKER_SANS), the hooks' secret, and the device root and issuing CA
# (Mosquitto's client CA and CRL signer). The CA keys, the service's TLS key and the service key
# stay here.
if [[ -n ${DPS_PUBLISH_DIR:-} ]]; then
    publish=$DPS_PUBLISH_DIR
    [[ -f $secrets/broker.pem ]] || pki_issue "$secrets" broker "${DPS_BROKER_SANS:-}"
    mkdir -p "$publish/device" "$publish/operator" "$publish/broker"
    cp -f "$secrets/ca.pem" "$publish/device/ca.pem"
    cp -f "$secrets/ca.pem" "$secrets/policies" "$publish/operator/"
    cp -f "$secrets/issuing/hub-backend.pem" "$secrets/issuing/hub-backend.key" "$publish/operator/"
    cp -f "$secrets/issuing/root.pem" "$publish/broker/device-root.pem"
    cp -f "$secrets/issuing/issuing.pem" "$publish/broker/issuing.pem"
    cp -f "$secrets/ca.pem" "$secrets/hub-auth.secret" "$publish/broker/"
    cp -f "$secrets/broker.pem" "$publish/broker/server.pem"
    cp -f "$secrets/broker.key" "$publish/broker/server.key"
    chmod 0644 "$publish"/*/ca.pem
fi
export DPS_TLS_CERT_FILE=$secrets/server.pem DPS_TLS_KEY_FILE=$secrets/server.key
export DPS_SERVICE_KEY_FILE=$secrets/service.key DPS_ACCESS_POLICY_FILE=$secrets/policies
# The brokers' hook listener is on when DPS_HUB_AUTH_LISTEN is set; its secret is made here.
export DPS_HUB_AUTH_SECRET_FILE=$secrets/hub-auth.secret
exec "${PROVISIONING_SERVICE:-provisioning-service}" serve
