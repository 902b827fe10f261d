-- Remote attestation (docs/protocol.md §10).
--
-- A challenge issued to a device that showed an attestation key keeps that key's TPM2B_PUBLIC
-- and the SHA-256 of the nonce sealed to it; the SAS step judges the quote against both. Only
-- the hash is kept: what is stored cannot answer a challenge.
ALTER TABLE challenges ADD COLUMN attestation_key BYTEA,
                       ADD COLUMN attestation_nonce_hash BYTEA;
-- What the device's registration proved (the service API's registrationState.attestation):
-- verdict, AK name, quoted PCRs, and the values pinned on first use.
ALTER TABLE registrations ADD COLUMN attestation JSONB;

-- put_challenge (migration 0012) with the two new columns: a new signature, so the old
-- function goes.
DROP FUNCTION put_challenge(UUID, TEXT, TEXT, BYTEA, BYTEA, BYTEA, TEXT, BYTEA, TIMESTAMPTZ,
                            TIMESTAMPTZ, BIGINT, BIGINT, TEXT);
CREATE FUNCTION put_challenge(
    p_challenge_id UUID, p_registration_id TEXT, p_client_address TEXT, p_ek_hash BYTEA,
    p_storage_root_key BYTEA, p_sealed_key BYTEA, p_key_id TEXT, p_authentication_key BYTEA,
    p_issued_at TIMESTAMPTZ, p_expires_at TIMESTAMPTZ, p_per_address BIGINT, p_overall BIGINT,
    p_group_id TEXT, p_attestation_key BYTEA, p_attestation_nonce_hash BYTEA)
RETURNS VOID
LANGUAGE plpgsql VOLATILE
SET enable_seqscan = off
AS $$
DECLARE
    doomed UUID[];
    per_address BIGINT;
    overall BIGINT;
    expired BIGINT;
BEGIN
    -- Two-key advisory locks never collide with the housekeeping sweep's one-key lock; 25448
    -- ('ch') names this lock's class.
    PERFORM pg_advisory_xact_lock(25448, hashtext(p_registration_id));
    INSERT INTO challenges (challenge_id, registration_id, client_address, ek_hash,
                            storage_root_key, sealed_key, key_id, authentication_key, issued_at,
                            expires_at, group_id, attestation_key, attestation_nonce_hash)
    VALUES (p_challenge_id, p_registration_id, p_client_address, p_ek_hash, p_storage_root_key,
            p_sealed_key, p_key_id, p_authentication_key, p_issued_at, p_expires_at, p_group_id,
            p_attestation_key, p_attestation_nonce_hash);
    SELECT count(*) FILTER (WHERE client_address = p_client_address), count(*),
           count(*) FILTER (WHERE expires_at <= p_issued_at)
      INTO per_address, overall, expired
      FROM challenges WHERE registration_id = p_registration_id;
    IF per_address <= p_per_address AND overall <= p_overall AND expired = 0 THEN
        RETURN;
    END IF;
    -- The new challenge ranks first whatever its issue time, so it is never the one pruned.
    SELECT array_agg(challenge_id) INTO doomed FROM (
        SELECT challenge_id, expires_at,
               row_number() OVER (PARTITION BY client_address
                                  ORDER BY challenge_id = p_challenge_id DESC, issued_at DESC,
                                           challenge_id) AS rank_for_address,
               row_number() OVER (ORDER BY challenge_id = p_challenge_id DESC, issued_at DESC,
                                           challenge_id) AS rank_overall
        FROM challenges WHERE registration_id = p_registration_id
    ) ranked
    WHERE rank_for_address > p_per_address OR rank_overall > p_overall
       OR expires_at <= p_issued_at;
    DELETE FROM challenges WHERE challenge_id = ANY (doomed);
END
$$;
