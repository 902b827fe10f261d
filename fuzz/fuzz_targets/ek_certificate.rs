//! EK certificates as devices send them (DER, perhaps NV-framed or padded): parsing, path
//! building and the key comparison never panic. Seeded from the real vendor certificates in
//! `../shared/ek-certs` by scripts/fuzz.sh.
#![no_main]
use dps_protocol::ek_cert::EkCertificate;
use dps_protocol::tpm::Public;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(certificate) = EkCertificate::parse(data) {
        // The certificate as its own (untrusted) intermediate and as an anchor.
        let own = vec![certificate.der.clone()];
        let _ = certificate.chain_to(&own, &own);
        let _ = certificate.chain_to(&[], &own);
        if let Ok(ek) = Public::from_tpm2b(data) {
            let _ = certificate.certifies(&ek);
        }
    }
    let _ = dps_protocol::ek_cert::pem_certificates(data);
});
