-- TPM enrollment groups (docs/protocol.md §9): devices admitted by their EK certificate's chain
-- to CAs the owner trusts, with no per-device upload. `attestation` is the group's
-- `tpmEkCertificate` object as written (trusted CAs, intermediates, constraints, deny list,
-- cap); `extra` holds its other DPS fields (allocation, re-provisioning, initial twin).
CREATE TABLE enrollment_groups (
    group_id            TEXT PRIMARY KEY,
    attestation         JSONB NOT NULL,
    iot_hub_host_name   TEXT,
    provisioning_status TEXT NOT NULL CHECK (provisioning_status IN ('enabled', 'disabled')),
    extra               JSONB NOT NULL DEFAULT '{}'::jsonb,
    etag                UUID NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);

-- A device that joined a group gets an individual record linked to it (an operator disables
-- one device there without touching the group); deleting the group deletes those records.
ALTER TABLE enrollments
    ADD COLUMN group_id TEXT REFERENCES enrollment_groups (group_id) ON DELETE CASCADE;
CREATE INDEX enrollments_group ON enrollments (group_id) WHERE group_id IS NOT NULL;

-- The group that admitted a challenge's device, until it proves its key and joins.
ALTER TABLE challenges ADD COLUMN group_id TEXT;
