//! TPMs whose endorsement key is ECC (issue 30): the service's software `MakeCredential` to an
//! ECC EK (ECDH on the EK's curve, KDFe, the EK's nameAlg and AES size) is activated by swtpm,
//! end to end through the service. swtpm_setup manufactures every test TPM with a high-range
//! ECC P-384 EK (template H-3: SHA-384, AES-256, userWithAuth) persisted at 0x81010016 beside the
//! RSA one; the low-range P-256 EK (L-2: SHA-256, AES-128, PolicySecret) is made here with
//! tss-esapi's TCG template.

use device_client::tpm::{Handles, Tpm};
use dps_protocol::tpm::{Public, PublicParameters};
use reqwest::StatusCode;
use sqlx::PgPool;
use test_support::{Device, Swtpm, TestApp};
use tss_esapi::abstraction::ek;
use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::handles::PersistentTpmHandle;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;

/// Where swtpm_setup persists the high-range ECC P-384 EK (TCG Provisioning Guidance).
const P384_EK_HANDLE: u32 = 0x8101_0016;
/// Where this test persists a low-range ECC P-256 EK.
const P256_EK_HANDLE: u32 = 0x8101_0003;

/// The TPM at `tcti` with its EK at `handle`.
fn with_ek(tcti: &str, handle: u32) -> Tpm {
    Tpm::open_with_handles(
        tcti,
        Handles {
            endorsement_key: handle,
            ..Handles::default()
        },
    )
    .unwrap()
}

/// The curve and nameAlg of an EK.
fn curve_and_hash(ek: &[u8]) -> (u16, u16) {
    let public = Public::from_tpm2b(ek).unwrap();
    let PublicParameters::Ecc { curve_id, .. } = public.parameters else {
        panic!("an ECC EK")
    };
    (curve_id, public.name_alg)
}

/// Enrolled with its ECC EK, the device gets its challenge, swtpm activates it and imports the
/// key, and the SAS register is assigned.
async fn provisions(app: &TestApp, tpm: &mut Tpm) {
    let device = Device::of(tpm);
    app.enroll(&device.registration_id, &device.ek).await;
    let blob = app.challenge(&device).await;
    tpm.import_authentication_key(&blob)
        .expect("swtpm activates the credential sealed to its ECC EK");
    let (status, body) = app.register_with(&device, tpm).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "assigned", "{body}");
}

/// The P-384 EK provisions; another TPM presenting a copy of that EK (its public half, as
/// an impostor can) gets the challenge but cannot activate it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_tpm_with_a_high_range_p384_ek_provisions_and_a_copy_of_it_does_not(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let mut tpm = with_ek(&swtpm.tcti(), P384_EK_HANDLE);
    let ek = tpm.endorsement_key().unwrap();
    assert_eq!(curve_and_hash(&ek), (0x0004, 0x000C), "P-384, SHA-384");
    provisions(&app, &mut tpm).await;

    let genuine = Device::of(&mut tpm);
    let other = Swtpm::start();
    let mut impostor = with_ek(&other.tcti(), P384_EK_HANDLE);
    let blob = app.challenge(&genuine).await;
    assert!(
        impostor.import_authentication_key(&blob).is_err(),
        "a TPM without the EK's private key cannot activate the credential"
    );
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_tpm_with_a_low_range_p256_ek_provisions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    {
        let mut ctx = tss_esapi::Context::new(swtpm.tcti().parse().unwrap()).unwrap();
        let key = ek::create_ek_object_2(
            &mut ctx,
            AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            None,
        )
        .unwrap();
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(
                Provision::Owner,
                key.into(),
                Persistent::Persistent(PersistentTpmHandle::new(P256_EK_HANDLE).unwrap()),
            )
        })
        .unwrap();
        ctx.flush_context(key.into()).unwrap();
    }
    let mut tpm = with_ek(&swtpm.tcti(), P256_EK_HANDLE);
    let ek = tpm.endorsement_key().unwrap();
    assert_eq!(curve_and_hash(&ek), (0x0003, 0x000B), "P-256, SHA-256");
    provisions(&app, &mut tpm).await;
}
