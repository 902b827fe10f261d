//! The device API's JSON, both directions: the register body the service parses (then
//! validates as the service does) and the answers the device client parses.
#![no_main]
use dps_protocol::wire::{DeviceRegistration, ErrorBody, RegistrationOperationStatus, TpmChallenge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<DeviceRegistration>(data) {
        let id = body.registration_id.clone();
        let _ = provisioning_service::registration::parse_request(&id, body);
    }
    let _ = serde_json::from_slice::<RegistrationOperationStatus>(data);
    let _ = serde_json::from_slice::<TpmChallenge>(data);
    let _ = serde_json::from_slice::<ErrorBody>(data);
});
