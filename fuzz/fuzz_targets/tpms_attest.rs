//! TPMS_ATTEST and TPMT_SIGNATURE as a device sends them with its quote: parsing never panics,
//! and a quote check on anything parsed ends in a verdict, never a panic.
#![no_main]
use dps_protocol::attest::{verify_quote, Attest, Signature};
use dps_protocol::tpm::Public;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Attest::parse(data);
    let _ = Signature::parse(data);
    // [key length, attestation length, key (TPM2B_PUBLIC), attestation, signature]: the seed
    // `swtpm-quote` is a real one (tpm2-tools on swtpm).
    if let [key_len, attest_len, rest @ ..] = data {
        let key_len = usize::from(*key_len).min(rest.len());
        let (key, rest) = rest.split_at(key_len);
        let (attest, signature) = rest.split_at(usize::from(*attest_len).min(rest.len()));
        if let (Ok(ak), Ok(signature)) = (Public::from_tpm2b(key), Signature::parse(signature)) {
            let _ = verify_quote(&ak, attest, &signature, b"nonce", &[], &[]);
        }
    }
});
