-- The newest challenge of each registration: the HMAC key issued in the last 401, sealed with the
-- service key, until the device proves it with a SAS token or the challenge expires. Only the
-- newest is live: a new challenge replaces the row.
CREATE TABLE challenges (
    registration_id TEXT PRIMARY KEY,
    ek_hash         BYTEA NOT NULL,
    storage_root_key BYTEA NOT NULL,
    sealed_key      BYTEA NOT NULL,
    key_id          TEXT NOT NULL,
    -- The authenticationKey blob that carried the key. Not secret (only the one TPM can open
    -- it); DPS returns it again in registrationState.tpm, and the Azure clients import it.
    authentication_key BYTEA NOT NULL,
    issued_at       TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL
);

-- Registration states: the outcome of the last successful registration of a device, with the key
-- it proved (needed for its later SAS calls, and by the hub it is assigned to).
CREATE TABLE registrations (
    registration_id  TEXT PRIMARY KEY,
    operation_id     UUID NOT NULL UNIQUE,
    status           TEXT NOT NULL CHECK (status IN ('unassigned', 'assigning', 'assigned', 'failed', 'disabled')),
    substatus        TEXT,
    assigned_hub     TEXT,
    device_id        TEXT,
    ek_hash          BYTEA NOT NULL,
    storage_root_key BYTEA NOT NULL,
    sealed_key       BYTEA NOT NULL,
    key_id           TEXT NOT NULL,
    authentication_key BYTEA NOT NULL,
    error_code       INTEGER,
    error_message    TEXT,
    etag             UUID NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

-- Fixed-window request counters shared by every service instance (throttling).
CREATE TABLE throttle (
    bucket       TEXT PRIMARY KEY,
    window_start TIMESTAMPTZ NOT NULL,
    count        INTEGER NOT NULL
);
