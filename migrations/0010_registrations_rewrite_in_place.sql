-- A re-registration (aziot-identityd re-provisions on every start by default) rewrites a
-- device's registration row. Two changes let the new version stay on its page as a heap-only
-- tuple, with no new index entries and less for vacuum:
-- * operation ids are no longer indexed: every registration draws a new one (a random UUID),
--   which changed an indexed column on every write, and nothing looks a registration up by it
--   (a poll reads by registration id and compares the operation id);
-- * room on each page for the next version (pages written from now on).
ALTER TABLE registrations DROP CONSTRAINT registrations_operation_id_key;
ALTER TABLE registrations SET (fillfactor = 70);
