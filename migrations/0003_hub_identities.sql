-- The hub half: brokers ask the service about a device by (hub, device id), so that pair is
-- looked up on every MQTT connect and must name one registration (IoT Hub device ids are
-- unique within a hub). Host names compare case-insensitively.
CREATE UNIQUE INDEX registrations_hub_device ON registrations (lower(assigned_hub), device_id);
