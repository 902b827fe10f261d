-- A bounded set of live challenges per registration instead of one: a stranger who knows a
-- device's EK_pub can ask for challenges in its name, and must not be able to replace the one
-- the device is answering. Each challenge remembers the client address it was issued to; the
-- store keeps the newest few per (registration, address) and a cap per registration.
ALTER TABLE challenges DROP CONSTRAINT challenges_pkey;
ALTER TABLE challenges ADD COLUMN challenge_id UUID NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY;
ALTER TABLE challenges ADD COLUMN client_address TEXT NOT NULL DEFAULT '';
CREATE INDEX challenges_registration ON challenges (registration_id, issued_at DESC);
