//! TPM2B_PUBLIC as a device sends it (EK, SRK): parsing never panics, and what parses
//! re-marshals to the same bytes (the object name is computed over them).
#![no_main]
use dps_protocol::tpm::Public;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(public) = Public::from_tpm2b(data) {
        assert_eq!(public.to_tpm2b(), data, "round trip");
        let _ = public.seed_key("EK");
        let _ = dps_protocol::tpm::Name::of(&public);
    }
    if let Ok(public) = Public::from_tpmt(data) {
        assert_eq!(public.to_tpmt(), data, "round trip");
    }
});
