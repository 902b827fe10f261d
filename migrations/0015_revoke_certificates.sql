-- Revocation follows the enrollment (docs/protocol.md §11): disabling, deleting or re-keying an
-- individual enrollment revokes its device's live certificates, and disabling a group revokes
-- its members' (deleting a group deletes its members' enrollments, which revokes theirs). One
-- trigger per table catches every path that writes them: the API, bulk operations, the factory
-- CLI. Revoked stays revoked: enabling the enrollment again does not reinstate a certificate.
CREATE FUNCTION revoke_certificates_of_enrollment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.provisioning_status = 'disabled' OR NEW.ek_hash <> OLD.ek_hash THEN
        UPDATE issued_certificates SET revoked_at = now()
        WHERE registration_id = OLD.registration_id AND revoked_at IS NULL;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER enrollments_revoke_certificates
    AFTER UPDATE OR DELETE ON enrollments
    FOR EACH ROW EXECUTE FUNCTION revoke_certificates_of_enrollment();

CREATE FUNCTION revoke_certificates_of_group() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.provisioning_status = 'disabled' THEN
        UPDATE issued_certificates SET revoked_at = now()
        WHERE revoked_at IS NULL
          AND registration_id IN (SELECT registration_id FROM enrollments WHERE group_id = NEW.group_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER enrollment_groups_revoke_certificates
    AFTER UPDATE ON enrollment_groups
    FOR EACH ROW EXECUTE FUNCTION revoke_certificates_of_group();

-- The CRL's read: a policy's revoked certificates that have not expired.
CREATE INDEX issued_certificates_revoked ON issued_certificates (credential_policy, not_after)
    WHERE revoked_at IS NOT NULL;
