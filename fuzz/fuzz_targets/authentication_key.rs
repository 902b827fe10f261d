//! The authenticationKey blob as a device receives it: splitting never panics, and what splits
//! splits again the same after re-marshalling.
#![no_main]
use dps_protocol::AuthenticationKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(blob) = AuthenticationKey::from_bytes(data) {
        let again = AuthenticationKey::from_bytes(&blob.to_bytes()).expect("re-parse");
        assert_eq!(again.to_bytes(), blob.to_bytes(), "round trip");
    }
});
