-- Deleting a registration (`DELETE /registrations/{id}`) revokes its live certificates, as it
-- refuses its hub token: a hub that admits devices by certificate (Mosquitto, through the CRL)
-- then stops knowing the device too, and the device registers again (docs/hub.md).
CREATE FUNCTION revoke_certificates_of_registration() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE issued_certificates SET revoked_at = now()
    WHERE registration_id = OLD.registration_id AND revoked_at IS NULL;
    RETURN NULL;
END
$$;
CREATE TRIGGER registrations_revoke_certificates
    AFTER DELETE ON registrations
    FOR EACH ROW EXECUTE FUNCTION revoke_certificates_of_registration();
