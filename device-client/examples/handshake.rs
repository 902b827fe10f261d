//! One device's DPS TPM handshake on a real TPM, with the service side done in software:
//! read EK and SRK → build the authenticationKey blob for them (as the service does) → import it
//! into the TPM → sign a SAS token inside the TPM → verify it with the service's copy of the key.
//!
//! `TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=2321 cargo run -p device-client --example handshake`
//! (`scripts/demo.sh` starts a swtpm and runs this.)

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use device_client::tpm::{tcti_from_env, Tpm};
use dps_protocol::sas::{self, SasToken, VerifyPolicy, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::Public;
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand::rngs::OsRng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tcti = tcti_from_env();
    let started = Instant::now();
    let mut tpm = Tpm::open(&tcti)?;
    println!("TPM: {tcti}");

    // Device: what it sends in its first register call.
    let ek_bytes = tpm.endorsement_key()?;
    let srk_bytes = tpm.storage_root_key()?;
    let registration_id = RegistrationId::from_endorsement_key(&ek_bytes);
    println!("registration id (derived from EK_pub): {registration_id}");

    // Service: a fresh HMAC key, wrapped for this one TPM.
    let (ek, srk) = (
        Public::from_tpm2b(&ek_bytes)?,
        Public::from_tpm2b(&srk_bytes)?,
    );
    let issued = AuthenticationKey::issue(&ek, &srk, &mut OsRng)?;
    let blob = issued.blob.to_bytes();
    println!(
        "service: authenticationKey blob of {} bytes for this EK and SRK",
        blob.len()
    );

    // Device: ActivateCredential, Import, Load, persist; then sign inside the TPM.
    tpm.import_authentication_key(&blob)?;
    println!("device: key imported and persisted");
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let resource = sas::registration_resource("0ne00000DEMO", registration_id.as_str());
    let token = sas::build_token(&resource, now + 60, Some(REGISTRATION_KEY_NAME), &mut tpm)?;

    // Service: verify with its copy of the key.
    let policy = VerifyPolicy {
        resource: &resource,
        key_name: Some(REGISTRATION_KEY_NAME),
        now,
        max_skew: 30,
        max_lifetime: 3600,
    };
    SasToken::parse(&token)?.verify(issued.device_key.as_ref(), &policy)?;
    println!("service: SAS token signed by the TPM verifies");
    println!("handshake done in {:?}", started.elapsed());
    Ok(())
}
