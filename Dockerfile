# Multi-stage build of the demo images; every entrypoint is a script that scripts/demo.sh runs too.
# BuildKit cache mounts keep the cargo registry and the build directory between builds, so a
# source change rebuilds the project's crates, not every dependency.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libtss2-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p provisioning-service -p device-client \
    && mkdir -p /out && cp target/release/provisioning-service target/release/device-client /out/

# The provisioning service (creates throwaway secrets in /secrets if there are none).
FROM debian:bookworm-slim AS service
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl openssl xxd \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/provisioning-service /usr/local/bin/
COPY scripts /opt/dps/scripts
ENTRYPOINT ["/opt/dps/scripts/run-service.sh"]

# A device (and the factory station that enrolls it): device-client and the TPM libraries.
FROM debian:bookworm-slim AS device
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl openssl xxd \
        libtss2-esys-3.0.2-0 libtss2-tctildr0 libtss2-tcti-swtpm0 libtss2-tcti-device0 \
        libtss2-tcti-tabrmd0 libtss2-mu0 libtss2-sys1 libtss2-rc0 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/device-client /usr/local/bin/
COPY scripts /opt/dps/scripts
ENTRYPOINT ["/opt/dps/scripts/device-provision.sh"]

# The hub for certificate logins: Mosquitto, and the service binary for crl-sync beside it
# (mosquitto-clients for the back end that subscribes).
FROM debian:bookworm-slim AS mosquitto
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/provisioning-service /usr/local/bin/
COPY scripts /opt/dps/scripts
ENTRYPOINT ["/opt/dps/scripts/run-mosquitto.sh"]

# A software TPM, manufactured on first start into its volume.
FROM debian:bookworm-slim AS swtpm
RUN apt-get update && apt-get install -y --no-install-recommends swtpm swtpm-tools \
    && rm -rf /var/lib/apt/lists/*
COPY scripts /opt/dps/scripts
ENV SWTPM_BIND=0.0.0.0
ENTRYPOINT ["/opt/dps/scripts/run-swtpm.sh", "/var/lib/swtpm", "2321"]
