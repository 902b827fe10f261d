//! TPMs whose endorsement key is not the RSA-2048 one DPS knows (issue 30): the service's
//! software `MakeCredential` to an ECC EK (ECDH on the EK's curve, KDFe, the EK's nameAlg and AES
//! size) or to the high-range RSA-3072 EK (OAEP, KDFa and HMAC with SHA-384, AES-256) is
//! activated by swtpm, end to end through the service. swtpm_setup manufactures every test TPM with a high-range
//! ECC P-384 EK (template H-3: SHA-384, AES-256, userWithAuth) persisted at 0x81010016 beside the
//! RSA one; the low-range P-256 EK (L-2: SHA-256, AES-128, PolicySecret) is made here with
//! tss-esapi's TCG template.

use device_client::tpm::{EkType, Handles, Tpm};
use dps_protocol::tpm::{Public, PublicParameters};
use reqwest::StatusCode;
use sqlx::PgPool;
use test_support::{Device, Swtpm, TestApp};
use tss_esapi::abstraction::ek;
use tss_esapi::abstraction::AsymmetricAlgorithmSelection;
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::traits::Marshall;

/// The TPM at `tcti` using its EK of `ek_type`.
fn with_ek(tcti: &str, ek_type: EkType) -> Tpm {
    Tpm::open_with_handles(tcti, Handles::default().with_ek_type(ek_type)).unwrap()
}

/// The `TPM2B_PUBLIC` of the EK tss-esapi makes from its TCG template for `algorithm` (made,
/// read, flushed).
fn tss_esapi_ek(swtpm: &Swtpm, algorithm: AsymmetricAlgorithmSelection) -> Vec<u8> {
    let mut ctx = tss_esapi::Context::new(swtpm.tcti().parse().unwrap()).unwrap();
    let key = ek::create_ek_object_2(&mut ctx, algorithm, None).unwrap();
    let (public, _, _) = ctx.read_public(key).unwrap();
    ctx.flush_context(key.into()).unwrap();
    tss_esapi::structures::PublicBuffer::try_from(public)
        .unwrap()
        .marshall()
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
    let mut tpm = with_ek(&swtpm.tcti(), EkType::EccP384);
    let ek = tpm.endorsement_key().unwrap();
    assert_eq!(curve_and_hash(&ek), (0x0004, 0x000C), "P-384, SHA-384");
    provisions(&app, &mut tpm).await;

    an_impostor_cannot_activate(&app, &Device::of(&mut tpm), EkType::EccP384).await;
}

/// Another TPM presenting a copy of `genuine`'s EK (its public half, as an impostor can) and
/// using its own EK of the same type gets the challenge but cannot activate it.
async fn an_impostor_cannot_activate(app: &TestApp, genuine: &Device, ek_type: EkType) {
    let other = Swtpm::start();
    let mut impostor = with_ek(&other.tcti(), ek_type);
    let blob = app.challenge(genuine).await;
    assert!(
        impostor.import_authentication_key(&blob).is_err(),
        "{ek_type:?}: a TPM without the EK's private key cannot activate the credential"
    );
}

/// On a fresh TPM, the device client makes the EK of `ek_type` from its template; it must be
/// the EK tss-esapi's TCG template for `algorithm` makes on the same TPM (same seed, same
/// template, same key), and it provisions; an impostor does not. Returns its `TPM2B_PUBLIC`.
async fn made_from_the_tcg_template_and_provisioned(
    app: &TestApp,
    ek_type: EkType,
    algorithm: AsymmetricAlgorithmSelection,
) -> Vec<u8> {
    let swtpm = Swtpm::start();
    let ours = with_ek(&swtpm.tcti(), ek_type).endorsement_key().unwrap();
    assert_eq!(ours, tss_esapi_ek(&swtpm, algorithm), "{ek_type:?}");
    let mut tpm = with_ek(&swtpm.tcti(), ek_type);
    provisions(app, &mut tpm).await;
    an_impostor_cannot_activate(app, &Device::of(&mut tpm), ek_type).await;
    ours
}

/// The high-range SHA-256 templates (H-1 RSA-2048, H-2 P-256: PolicyB, userWithAuth, an empty
/// `unique`), which tss-esapi 7.x and tpm2-tools 5.4 do not make: swtpm derives each from our
/// template, ActivateCredential runs with a password (its userWithAuth), and it provisions; an
/// impostor does not. They are other keys than their low-range twins (same seed, other
/// template).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn tpms_with_high_range_sha256_eks_provision(pool: PgPool) {
    use dps_protocol::tpm::constants::TPMA_OBJECT_USER_WITH_AUTH;
    use dps_protocol::tpm::templates::EK_POLICY_B_SHA256;
    let app = TestApp::spawn(pool).await;
    for (high, low) in [
        (EkType::Rsa2048High, EkType::Rsa2048),
        (EkType::EccP256High, EkType::EccP256),
    ] {
        let swtpm = Swtpm::start();
        let mut tpm = with_ek(&swtpm.tcti(), high);
        let ek = Public::from_tpm2b(&tpm.endorsement_key().unwrap()).unwrap();
        assert_eq!(ek.auth_policy, EK_POLICY_B_SHA256, "{high:?}");
        assert_ne!(ek.object_attributes & TPMA_OBJECT_USER_WITH_AUTH, 0);
        assert_ne!(
            ek.to_tpm2b(),
            with_ek(&swtpm.tcti(), low).endorsement_key().unwrap(),
            "{high:?} is not {low:?}"
        );
        provisions(&app, &mut tpm).await;
        an_impostor_cannot_activate(&app, &Device::of(&mut tpm), high).await;
    }
}

/// A TPM whose owner chose an ECC P-256 SRK: the service duplicates the device key to it (the
/// outer seed shared by ECDH with label DUPLICATE), swtpm imports it, and it provisions, with
/// the P-384 EK beside it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_tpm_with_an_ecc_srk_imports_the_device_key(pool: PgPool) {
    use device_client::tpm::SrkType;
    let app = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let mut tpm = Tpm::open_with_handles(
        &swtpm.tcti(),
        Handles {
            srk_type: SrkType::EccP256,
            ..Handles::default()
        }
        .with_ek_type(EkType::EccP384),
    )
    .unwrap();
    let srk = Public::from_tpm2b(&tpm.storage_root_key().unwrap()).unwrap();
    assert!(
        matches!(
            srk.parameters,
            PublicParameters::Ecc {
                curve_id: 0x0003,
                ..
            }
        ),
        "an ECC P-256 SRK: {srk:?}"
    );
    provisions(&app, &mut tpm).await;
}

/// The low-range P-256 EK (L-2).
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_tpm_with_a_low_range_p256_ek_provisions(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let ek = made_from_the_tcg_template_and_provisioned(
        &app,
        EkType::EccP256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
    )
    .await;
    assert_eq!(curve_and_hash(&ek), (0x0003, 0x000B), "P-256, SHA-256");
}

/// The high-range RSA-3072 EK (H-6): OAEP, KDFa and HMAC with SHA-384 to a 3072-bit key.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_tpm_with_a_high_range_rsa3072_ek_provisions(pool: PgPool) {
    use tss_esapi::interface_types::key_bits::RsaKeyBits;
    let app = TestApp::spawn(pool).await;
    let ek = made_from_the_tcg_template_and_provisioned(
        &app,
        EkType::Rsa3072,
        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa3072),
    )
    .await;
    let public = Public::from_tpm2b(&ek).unwrap();
    assert_eq!(public.name_alg, 0x000C, "SHA-384");
    assert!(matches!(
        public.parameters,
        PublicParameters::Rsa { key_bits: 3072, .. }
    ));
}

/// The device client's H-3 template makes the very EK swtpm_setup certified: made at another
/// handle, it equals the one at 0x81010016.
#[test]
fn the_h3_template_makes_the_certified_p384_ek() {
    let swtpm = Swtpm::start();
    let certified = with_ek(&swtpm.tcti(), EkType::EccP384)
        .endorsement_key()
        .unwrap();
    let ours = Tpm::open_with_handles(
        &swtpm.tcti(),
        Handles {
            ek_type: EkType::EccP384,
            endorsement_key: 0x8101_0017,
            ..Handles::default()
        },
    )
    .unwrap()
    .endorsement_key()
    .unwrap();
    assert_eq!(ours, certified);
}

/// The binary on a TPM no one enrolled whose only EK certificate is the H-3 one (the RSA one's
/// NV index removed): `--ek-type auto` (the default) finds it at 0x01C00016 and uses the P-384
/// EK; the certificate (swtpm's local CA) admits it to a group that trusts the CA's root, and
/// it provisions. `ek --json` shows the P-384 EK.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn the_binary_finds_the_certified_p384_ek_and_provisions_through_a_group(pool: PgPool) {
    use super::provision::{device_client, register_args};
    let app = TestApp::spawn(pool).await;
    let swtpm = Swtpm::start();
    let (root, issuer) = test_support::swtpm::local_ca();
    let group = serde_json::json!({
        "enrollmentGroupId": "ecc-line",
        "attestation": {"type": "tpmEkCertificate", "tpmEkCertificate": {
            "trustedCaCertificates": [String::from_utf8(root).unwrap()],
        }},
    });
    let (status, body) = app
        .admin(
            reqwest::Method::PUT,
            "/enrollmentGroups/ecc-line",
            Some(group),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let certificate = with_ek(&swtpm.tcti(), EkType::EccP384)
        .endorsement_key_certificate()
        .unwrap()
        .expect("swtpm_setup stored the P-384 EK's certificate");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ek.pem");
    let pem = dps_protocol::ek_cert::pem_block("CERTIFICATE", &certificate)
        + &String::from_utf8(issuer).unwrap();
    std::fs::write(&bundle, pem).unwrap();

    let tcti = swtpm.tcti();
    let out = std::process::Command::new("tpm2_nvundefine")
        .args(["-T", &tcti, "-C", "p", "0x01C00002"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let ek = device_client(
        ["--tcti", &tcti, "ek", "--json"]
            .map(str::to_owned)
            .to_vec(),
    )
    .await;
    assert!(ek.status.success(), "{ek:?}");
    let shown: serde_json::Value = serde_json::from_slice(&ek.stdout).unwrap();
    let ek_bytes = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shown["endorsementKey"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(curve_and_hash(&ek_bytes), (0x0004, 0x000C));

    let mut args = register_args(&app, &tcti, &dir.path().join("state.json"));
    args.extend(["--ek-cert-file".to_owned(), bundle.display().to_string()]);
    let out = device_client(args).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("assigned"),
        "{out:?}"
    );
}
