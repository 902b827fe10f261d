#!/usr/bin/env bash
# Runs the hub's MQTT broker in the foreground: a RabbitMQ node with MQTT over TLS only, whose
# users and permissions are the provisioning service's answers (rabbitmq_auth_backend_http).
# Environment:
#   DPS_BROKER_DIR        the node's state (created)
#   DPS_BROKER_PORT       MQTT-over-TLS port (default 8883); DPS_BROKER_BIND (default 127.0.0.1)
#   DPS_BROKER_TLS_DIR    ca.pem, server.pem, server.key for the listener
#   DPS_HUB_AUTH_URL      the service's hook listener, http://HOST:PORT
#   DPS_HUB_AUTH_SECRET_FILE  the secret that goes into the hook URLs
#   DPS_BROKER_HUB        the linked hub this broker serves (its host name); the hooks admit
#                         only that hub's devices
#   RABBITMQ_SERVER       the server script (default: Debian's /usr/lib/rabbitmq/bin/rabbitmq-server)
set -euo pipefail
source "$(dirname "$0")/lib/rabbitmq.sh"
dir=${DPS_BROKER_DIR:?} tls=${DPS_BROKER_TLS_DIR:?}
secret=$(tr -d '[:space:]' <"${DPS_HUB_AUTH_SECRET_FILE:?}")
rmq_configure "$dir" "${DPS_BROKER_BIND:-127.0.0.1}:${DPS_BROKER_PORT:-8883}" \
    "${DPS_HUB_AUTH_URL:?}/$secret/hubs/${DPS_BROKER_HUB:?}" "$tls"
rmq_exec "$dir"
