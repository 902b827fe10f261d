//! The factory CLI's functions: one device from every EK format, and an idempotent bulk load.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use provisioning_service::config::{BulkArgs, DatabaseArgs, EnrollArgs};
use provisioning_service::factory::{self, BulkSummary, Outcome};
use rsa::pkcs8::EncodePublicKey;
use sqlx::PgPool;

use crate::enrollments::fake_ek;

fn db() -> DatabaseArgs {
    DatabaseArgs {
        database_url: String::new(),
        db_max_connections: Some(1),
        db_acquire_timeout_ms: 1000,
    }
}

fn args() -> EnrollArgs {
    EnrollArgs {
        database: db(),
        registration_id: None,
        ek_base64: None,
        ek_file: None,
        ek_cert: None,
        ek_ca_file: None,
        device_id: None,
        iot_hub_host_name: None,
        disabled: false,
    }
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn enroll_one_from_each_format(pool: PgPool) {
    // DPS base64, registration id derived from the EK as the Azure clients derive it.
    let ek = fake_ek(1);
    let (id, outcome) = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_base64: Some(STANDARD.encode(&ek)),
            ..args()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        id,
        dps_protocol::RegistrationId::from_endorsement_key(&ek).as_str()
    );
    assert_eq!(outcome, Outcome::Written);
    let (_, outcome) = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_base64: Some(STANDARD.encode(&ek)),
            ..args()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Unchanged);

    // A TPM2B_PUBLIC file as tpm2-tools and `device-client ek --out` write it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ek.pub");
    std::fs::write(&file, fake_ek(2)).unwrap();
    let (_, outcome) = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_file: Some(file),
            registration_id: Some("from-file".into()),
            ..args()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Written);

    // A PEM public key: the TCG default EK template is assumed around its modulus.
    let key = rsa::RsaPrivateKey::new(
        &mut <rand_chacha::ChaCha20Rng as rand::SeedableRng>::seed_from_u64(3),
        2048,
    )
    .unwrap();
    let pem = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .unwrap();
    let file = dir.path().join("ek.pem");
    std::fs::write(&file, pem).unwrap();
    let (_, outcome) = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_file: Some(file),
            registration_id: Some("from-pem".into()),
            ..args()
        },
    )
    .await
    .unwrap();
    assert_eq!(outcome, Outcome::Written);

    // Garbage is refused.
    let file = dir.path().join("junk");
    std::fs::write(&file, b"junk").unwrap();
    assert!(factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_file: Some(file),
            registration_id: Some("junk".into()),
            ..args()
        }
    )
    .await
    .is_err());
}

#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn bulk_load_is_idempotent(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("devices.csv");
    let mut f = std::fs::File::create(&csv).unwrap();
    writeln!(
        f,
        "registrationId,endorsementKey,deviceId,iotHubHostName,provisioningStatus"
    )
    .unwrap();
    for i in 0..50u8 {
        writeln!(f, "device-{i},{},,,", STANDARD.encode(fake_ek(i))).unwrap();
    }
    writeln!(f, "bad@id,{},,,", STANDARD.encode(fake_ek(200))).unwrap();
    let bulk = BulkArgs {
        database: db(),
        file: csv,
        quiet: true,
        ek_ca_file: None,
    };
    let first = factory::enroll_file(&pool, &bulk, |_| {}).await.unwrap();
    assert_eq!(
        first,
        BulkSummary {
            written: 50,
            unchanged: 0,
            failed: 1
        }
    );
    let second = factory::enroll_file(&pool, &bulk, |_| {}).await.unwrap();
    assert_eq!(
        second,
        BulkSummary {
            written: 0,
            unchanged: 50,
            failed: 1
        }
    );

    let jsonl = dir.path().join("devices.jsonl");
    let line =
        serde_json::to_string(&test_support::enrollment("json-device", &fake_ek(99))).unwrap();
    std::fs::write(&jsonl, format!("{line}\n")).unwrap();
    let summary = factory::enroll_file(
        &pool,
        &BulkArgs {
            database: db(),
            file: jsonl,
            quiet: true,
            ek_ca_file: None,
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        BulkSummary {
            written: 1,
            unchanged: 0,
            failed: 0
        }
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM enrollments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 51);
}

/// A batch is checked against the table and against itself, line by line: a registration id
/// or an EK seen earlier in the batch, and an EK enrolled under another id, are refused with
/// their line numbers; the other lines are written; nothing refused is.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn a_batch_refuses_repeats_and_taken_eks_by_line(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("batch.csv");
    let stored = BulkArgs {
        database: db(),
        file: dir.path().join("stored.csv"),
        quiet: true,
        ek_ca_file: None,
    };
    std::fs::write(
        &stored.file,
        format!("stored,{}\n", STANDARD.encode(fake_ek(3))),
    )
    .unwrap();
    factory::enroll_file(&pool, &stored, |_| {}).await.unwrap();
    let lines = [
        format!("device-a,{}", STANDARD.encode(fake_ek(1))),
        format!("device-a,{}", STANDARD.encode(fake_ek(2))),
        format!("device-b,{}", STANDARD.encode(fake_ek(1))),
        format!("device-c,{}", STANDARD.encode(fake_ek(3))),
        format!("device-d,{}", STANDARD.encode(fake_ek(4))),
    ];
    std::fs::write(&csv, lines.join("\n")).unwrap();
    let mut refused = Vec::new();
    let summary = factory::enroll_file(
        &pool,
        &BulkArgs {
            database: db(),
            file: csv,
            quiet: true,
            ek_ca_file: None,
        },
        |e| refused.push(e.to_string()),
    )
    .await
    .unwrap();
    assert_eq!(
        summary,
        BulkSummary {
            written: 2,
            unchanged: 0,
            failed: 3
        }
    );
    assert_eq!(
        refused,
        [
            "line 2: this registration id appears earlier in the same batch",
            "line 3: this endorsement key is enrolled under another registration id",
            "line 4: this endorsement key is enrolled under another registration id",
        ]
    );
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT registration_id, endorsement_key FROM enrollments ORDER BY registration_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            ("device-a".to_owned(), fake_ek(1)),
            ("device-d".to_owned(), fake_ek(4)),
            ("stored".to_owned(), fake_ek(3)),
        ]
    );
}

/// A factory uploads EK certificates instead of keys: each is checked against the vendor CAs
/// it trusts, and the EK it certifies is enrolled; the device then provisions with it.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn enroll_by_ek_certificate(pool: PgPool) {
    let app = test_support::TestApp::spawn(pool.clone()).await;
    let mut t = test_support::TestTpm::fresh();
    let device = test_support::Device::with_certificate(&mut t.tpm);
    let dir = tempfile::tempdir().unwrap();
    let (root, issuer) = test_support::swtpm::local_ca();
    let trust = dir.path().join("vendor-cas.pem");
    std::fs::write(&trust, [root.as_slice(), issuer.as_slice()].concat()).unwrap();
    let cert = dir.path().join("ek.der");
    std::fs::write(&cert, device.ek_certificate.as_ref().unwrap()).unwrap();

    // Another vendor's CA: refused, nothing written.
    let stm = test_support::workspace_root().join("../shared/ek-certs/STM-1/root.pem");
    let refused = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_cert: Some(cert.clone()),
            ek_ca_file: Some(stm),
            ..args()
        },
    )
    .await;
    assert!(
        matches!(refused, Err(factory::FactoryError::EkCertificate(_))),
        "{refused:?}"
    );
    let (id, outcome) = factory::enroll_one(
        &pool,
        &EnrollArgs {
            ek_cert: Some(cert),
            ek_ca_file: Some(trust.clone()),
            ..args()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (id.as_str(), outcome),
        (device.registration_id.as_str(), Outcome::Written)
    );
    let operation_id = app.provision(&mut t, &device).await;
    let (_, body) = app.poll(&device, &operation_id, &mut t.tpm).await;
    assert_eq!(body["status"], "assigned", "{body}");

    // The bulk path: the endorsementKey column may hold the certificate.
    let csv = dir.path().join("certs.csv");
    let line = format!(
        "{},{}\n",
        device.registration_id,
        STANDARD.encode(device.ek_certificate.as_ref().unwrap())
    );
    std::fs::write(&csv, line).unwrap();
    let bulk = |ek_ca_file| BulkArgs {
        database: db(),
        file: csv.clone(),
        quiet: true,
        ek_ca_file,
    };
    let without = factory::enroll_file(&pool, &bulk(None), |_| {})
        .await
        .unwrap();
    assert_eq!(without.failed, 1, "a certificate needs a trust store");
    let with = factory::enroll_file(&pool, &bulk(Some(trust)), |_| {})
        .await
        .unwrap();
    assert_eq!(
        with,
        BulkSummary {
            written: 0,
            unchanged: 1,
            failed: 0
        }
    );
}

/// Real vendors' ECC P-256 EK certificates (STMicroelectronics, Infineon; `../shared/ek-certs`)
/// enroll through the factory: checked against the vendor's root and intermediate, the EK they
/// certify is written as the TCG L-2 template around the certificate's point.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn vendor_ecc_ek_certificates_enroll(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    for vendor in ["STM-2", "IFX-3"] {
        let certs = test_support::workspace_root()
            .join("../shared/ek-certs")
            .join(vendor);
        let trust = dir.path().join(format!("{vendor}.pem"));
        let cas = [
            std::fs::read(certs.join("root.pem")).unwrap(),
            std::fs::read(certs.join("intermediate.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(&trust, cas).unwrap();
        let (id, outcome) = factory::enroll_one(
            &pool,
            &EnrollArgs {
                ek_cert: Some(certs.join("ek.der")),
                ek_ca_file: Some(trust),
                ..args()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{vendor}: {e}"));
        assert_eq!(outcome, Outcome::Written, "{vendor}");
        let ek: Vec<u8> = sqlx::query_scalar(
            "SELECT endorsement_key FROM enrollments WHERE registration_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
        let public = dps_protocol::tpm::Public::from_tpm2b(&ek).unwrap();
        assert!(
            matches!(
                public.parameters,
                dps_protocol::tpm::PublicParameters::Ecc {
                    curve_id: 0x0003,
                    ..
                }
            ),
            "{vendor}"
        );
    }
}

/// Issue 30: a PEM public key of each EK type, as `tpm2_readpublic -f pem` writes one (here
/// made by OpenSSL, an implementation not ours), enrolls through `--ek-file` as its type's TCG
/// template; a P-256 point moved off its curve is refused and writes nothing.
#[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
async fn pem_public_keys_of_every_ek_type_enroll(pool: PgPool) {
    use dps_protocol::tpm::{Public, PublicParameters};
    let dir = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    };
    // Writes the PEM `text` to a file and enrolls it as `id`.
    let enroll_pem = |id: &'static str, file: &str, text: Vec<u8>| {
        let (pool, file) = (pool.clone(), dir.path().join(file));
        async move {
            std::fs::write(&file, text).unwrap();
            let args = EnrollArgs {
                ek_file: Some(file),
                registration_id: Some(id.into()),
                ..args()
            };
            factory::enroll_one(&pool, &args)
                .await
                .map(|(_, outcome)| outcome)
        }
    };
    let stored = |id: &'static str| {
        let pool = pool.clone();
        async move {
            let ek: Vec<u8> = sqlx::query_scalar(
                "SELECT endorsement_key FROM enrollments WHERE registration_id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
            Public::from_tpm2b(&ek).unwrap().parameters
        }
    };
    for (id, key_option) in [
        ("pem-p256", "ec_paramgen_curve:P-256"),
        ("pem-p384", "ec_paramgen_curve:P-384"),
        ("pem-rsa3072", "rsa_keygen_bits:3072"),
    ] {
        let algorithm = if id == "pem-rsa3072" { "RSA" } else { "EC" };
        let key = format!("{id}.key");
        openssl(&[
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            key_option,
            "-out",
            &key,
        ]);
        let pem = openssl(&["pkey", "-in", &key, "-pubout"]);
        let outcome = enroll_pem(id, &format!("{id}.pem"), pem).await;
        assert_eq!(outcome.unwrap(), Outcome::Written, "{id}");
        if algorithm == "RSA" {
            // The same key as PKCS#1 (`RSA PUBLIC KEY`) is the same EK.
            let pkcs1 = openssl(&["rsa", "-in", &key, "-RSAPublicKey_out"]);
            let outcome = enroll_pem(id, &format!("{id}.pkcs1.pem"), pkcs1).await;
            assert_eq!(outcome.unwrap(), Outcome::Unchanged, "{id} PKCS#1");
        }
        match (id, stored(id).await) {
            ("pem-p256", PublicParameters::Ecc { curve_id: 3, .. })
            | ("pem-p384", PublicParameters::Ecc { curve_id: 4, .. })
            | ("pem-rsa3072", PublicParameters::Rsa { key_bits: 3072, .. }) => {}
            (id, other) => panic!("{id}: {other:?}"),
        }
    }

    // The same P-256 key with the last byte of its y coordinate changed.
    let der = openssl(&["pkey", "-pubin", "-in", "pem-p256.pem", "-outform", "DER"]);
    let mut bent = der;
    *bent.last_mut().unwrap() ^= 1;
    let bent = dps_protocol::ek_cert::pem_block("PUBLIC KEY", &bent).into_bytes();
    let refused = enroll_pem("off-curve", "off-curve.pem", bent)
        .await
        .expect_err("a point off the curve");
    assert!(refused.to_string().contains("curve"), "{refused}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM enrollments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 3);
}
