-- Individual enrollments: what a factory uploads, one row per device.
CREATE TABLE enrollments (
    registration_id     TEXT PRIMARY KEY,
    -- The EK's marshalled TPM2B_PUBLIC, as the device will send it.
    endorsement_key     BYTEA NOT NULL,
    -- SHA-256 of endorsement_key: one enrollment per EK, and the per-EK throttle bucket.
    ek_hash             BYTEA NOT NULL UNIQUE,
    device_id           TEXT,
    iot_hub_host_name   TEXT,
    provisioning_status TEXT NOT NULL CHECK (provisioning_status IN ('enabled', 'disabled')),
    -- Fields of the DPS enrollment we store and return but do not interpret (initialTwin,
    -- capabilities, allocationPolicy, iotHubs, reprovisionPolicy, optional storageRootKey).
    extra               JSONB NOT NULL DEFAULT '{}'::jsonb,
    etag                UUID NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
