-- The housekeeping sweep finds ended throttle windows and expired challenges by time.
CREATE INDEX throttle_window_start ON throttle (window_start);
CREATE INDEX challenges_expires_at ON challenges (expires_at);
