-- Certificate issuance (DPS 2026-04-01 `csr` → `issuedCertificateChain`; docs/protocol.md §11).
--
-- The chain last issued for a registration, returned by its register answer and its polls (a
-- status lookup does not return it, as in DPS).
ALTER TABLE registrations ADD COLUMN certificate_chain BYTEA[];

-- Every certificate issued, for revocation: a new one for a registration revokes its earlier
-- live ones; disabling or deleting an enrollment (or its group) revokes its devices'.
CREATE TABLE issued_certificates (
    serial BYTEA PRIMARY KEY,
    registration_id TEXT NOT NULL,
    credential_policy TEXT NOT NULL,
    -- SHA-256 of the leaf's DER.
    fingerprint BYTEA NOT NULL,
    not_before TIMESTAMPTZ NOT NULL,
    not_after TIMESTAMPTZ NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX issued_certificates_registration ON issued_certificates (registration_id)
    WHERE revoked_at IS NULL;
