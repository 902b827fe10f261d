-- Challenges are read by registration id only, and the reads must stay index scans however
-- the table's size changes. A connection plans each statement once and keeps the plan until
-- the table's statistics change. Planned while the table was nearly empty (a vacuum truncates
-- it once the devices of a wave are through), the read was a sequential scan, and stayed one
-- while the next wave grew the table: 260 pages read a call, 0.36 ms, in the benchmark.
-- The planner prices a sequential scan by the table's pages at planning time. So the table
-- keeps its pages when vacuumed (a plan made after a vacuum sees the table at the size it grew
-- to), and it starts with 64 (below): a table a few pages long is cheaper to scan than to look
-- up by index, and a plan made then, before or after a small first wave, scanned it whole
-- while the next wave grew it. put_challenge, which reads the table on every challenge, plans
-- without sequential scans at all. (VACUUM FULL, CLUSTER or TRUNCATE would shrink the table
-- again; the service never runs them.)
ALTER TABLE challenges SET (vacuum_truncate = false);
-- 64 pages of rows written and deleted in this one transaction: dead when it commits, never
-- seen by anyone, their pages kept.
INSERT INTO challenges (challenge_id, registration_id, client_address, ek_hash,
                        storage_root_key, sealed_key, key_id, authentication_key, issued_at,
                        expires_at)
SELECT gen_random_uuid(), '', '', '\x', decode(repeat('00', 400), 'hex'), '\x', '', '\x',
       now(), now()
FROM generate_series(1, 64 * 16);
DELETE FROM challenges WHERE registration_id = '';
-- The SAS step reads a registration's live challenges (`registration_id = $1 AND expires_at >
-- $2`). With no statistics (the table is mostly empty when analyzed) both conditions looked
-- equally selective, and the read went through the index on expires_at, that is through every
-- live challenge. An index on both makes the registration's own the cheapest path.
DROP INDEX challenges_registration;
CREATE INDEX challenges_registration ON challenges (registration_id, expires_at);

-- put_challenge (migration 0011) again, cheaper, and planned as above.
--
-- In the common case there is nothing to prune (a device asks for one challenge and answers
-- it), so the function first counts what the caps concern, with no sorting, and ranks the
-- registration's challenges only when a cap is exceeded or one has expired.
CREATE OR REPLACE FUNCTION put_challenge(
    p_challenge_id UUID, p_registration_id TEXT, p_client_address TEXT, p_ek_hash BYTEA,
    p_storage_root_key BYTEA, p_sealed_key BYTEA, p_key_id TEXT, p_authentication_key BYTEA,
    p_issued_at TIMESTAMPTZ, p_expires_at TIMESTAMPTZ, p_per_address BIGINT, p_overall BIGINT,
    p_group_id TEXT)
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
                            expires_at, group_id)
    VALUES (p_challenge_id, p_registration_id, p_client_address, p_ek_hash, p_storage_root_key,
            p_sealed_key, p_key_id, p_authentication_key, p_issued_at, p_expires_at, p_group_id);
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
