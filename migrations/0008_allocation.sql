-- Allocation per enrollment (docs/protocol.md, "Allocation"): what a custom allocation webhook
-- returned for the device (registrationState.payload), the twin an assignment starts with
-- (the enrollment's or the webhook's initialTwin), and, while a webhook decides (status
-- 'assigning'), when the decision is overdue: past it, any instance answers the device with
-- 'failed' instead of 'assigning' forever.
ALTER TABLE registrations
    ADD COLUMN payload      JSONB,
    ADD COLUMN initial_twin JSONB,
    ADD COLUMN decide_by    TIMESTAMPTZ;
