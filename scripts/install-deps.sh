#!/usr/bin/env bash
# Installs what a fresh Debian 12 needs to build and test this workspace. Idempotent: apt runs
# only when a package is missing.
set -euo pipefail

# chromium and chromium-driver: the admin page is tested in a real browser. tpm2-abrmd and
# dbus-daemon: the device client is also tested behind the user-space resource manager;
# tpm2-openssl: OpenSSL uses the issued identity with the key in the TPM. mosquitto: the broker
# that takes certificate logins. patroni, etcd-server and haproxy: the high-availability Postgres
# cluster the failover test runs (scripts/lib/ha.sh).
packages=(swtpm swtpm-tools mosquitto mosquitto-clients libtss2-dev tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus-daemon tpm2-openssl pkg-config xxd postgresql rabbitmq-server openssl curl docker-compose chromium chromium-driver patroni etcd-server haproxy)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}" >&2
    sudo_cmd=()
    [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Debian starts a server package's system service on install; the tests and the demo start
    # their own on loopback, so stop and disable what this install started.
    for package in mosquitto rabbitmq-server postgresql etcd-server haproxy patroni; do
        [[ " ${missing[*]} " == *" $package "* ]] || continue
        service=${package%-server}
        [[ $package == rabbitmq-server ]] && service=$package
        "${sudo_cmd[@]}" systemctl disable --now "$service" >/dev/null 2>&1 ||
            "${sudo_cmd[@]}" service "$service" stop >/dev/null 2>&1 || true
    done
    # RabbitMQ's start also started Erlang's port mapper (epmd, on every interface), which
    # stopping RabbitMQ leaves running: the tests start their own on a loopback port.
    if [[ " ${missing[*]} " == *" rabbitmq-server "* ]]; then
        "${sudo_cmd[@]}" systemctl disable --now epmd.socket epmd.service >/dev/null 2>&1 || true
        epmd -kill >/dev/null 2>&1 || true
    fi
fi
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
