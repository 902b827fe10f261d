-- Throttle counters and live challenges are disposable: after a crash a device asks for a new
-- challenge and the counters start again. Unlogged, their writes skip the WAL (most of the
-- device steps' writes). They are not replicated either: after a failover to a standby the same
-- holds, devices re-ask. Registrations and enrollments stay logged.
ALTER TABLE throttle SET UNLOGGED;
ALTER TABLE challenges SET UNLOGGED;
