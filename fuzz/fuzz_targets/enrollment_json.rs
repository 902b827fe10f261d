//! The service API's enrollment bodies (single and bulk) and the factory's CSV/JSONL lines:
//! parsing and validation never panic, and an accepted enrollment survives a JSON round trip.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provisioning_service::enrollment::{BulkEnrollmentOperation, IndividualEnrollment};

fuzz_target!(|data: &[u8]| {
    if let Ok(enrollment) = serde_json::from_slice::<IndividualEnrollment>(data) {
        if enrollment.to_new(None).is_ok() {
            let json = serde_json::to_vec(&enrollment).expect("serialize");
            let again: IndividualEnrollment = serde_json::from_slice(&json).expect("re-parse");
            assert!(again.to_new(None).is_ok());
        }
    }
    if let Ok(bulk) = serde_json::from_slice::<BulkEnrollmentOperation>(data) {
        for enrollment in &bulk.enrollments {
            let _ = enrollment.to_new(None);
        }
    }
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = provisioning_service::factory::parse_line(line, false, 2, None);
        let _ = provisioning_service::factory::parse_line(line, true, 2, None);
    }
});
