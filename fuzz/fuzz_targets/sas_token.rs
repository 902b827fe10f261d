//! SAS tokens as a device, a broker or an operator sends them: parsing and verifying never
//! panic, whatever the expiry or encoding.
#![no_main]
use dps_protocol::sas::{SasToken, VerifyPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = SasToken::parse(text) {
        let policy = VerifyPolicy {
            resource: &token.resource,
            key_name: token.key_name.as_deref(),
            now: 1_800_000_000,
            max_skew: u64::MAX,
            max_lifetime: u64::MAX,
        };
        let _ = token.verify(&[7; 32], &policy);
        let _ = format!("{token:?}");
    }
    let _ = dps_protocol::RegistrationId::parse(text);
});
