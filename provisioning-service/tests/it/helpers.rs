//! A running service (HTTPS on 127.0.0.1:0, throwaway CA) and the device and factory calls
//! the tests make, named after the protocol steps.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use device_client::tpm::Tpm;
use dps_protocol::sas::{self, Signer, SoftwareKey, REGISTRATION_KEY_NAME};
use dps_protocol::wire::{Base64Bytes, DeviceRegistration, TpmAttestation};
use dps_protocol::RegistrationId;
use provisioning_service::app::AccessPolicy;
use provisioning_service::enrollment::{Attestation, IndividualEnrollment, ProvisioningStatus};
use provisioning_service::sealing::Sealer;
use provisioning_service::{App, Settings};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

use crate::swtpm::Swtpm;

pub const ID_SCOPE: &str = "0ne00000TST";
pub const HUBS: [&str; 2] = ["hub-a.example.net", "hub-b.example.net"];
pub const POLICY: &str = "provisioningserviceowner";
pub const POLICY_KEY: &[u8] = b"factory-policy-key-0123456789abc";
pub const API: &str = "api-version=2019-03-31";

/// The committed, manufactured swtpm state (EK and SRK persisted).
pub fn fixture_state() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../device-client/tests/fixtures/swtpm-state")
}

pub fn settings() -> Settings {
    let mut s = Settings::new(ID_SCOPE, HUBS.map(String::from).to_vec());
    s.access_policies = vec![AccessPolicy {
        name: POLICY.to_owned(),
        key: POLICY_KEY.to_vec().into(),
    }];
    "dps.test".clone_into(&mut s.service_host_name);
    s
}

/// Throwaway PKI: a CA and a leaf for localhost/127.0.0.1, as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: Vec<u8>,
}

impl Pki {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), leaf_key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_pem: ca.pem().into_bytes(),
        }
    }
}

/// One service instance.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pki: Arc<Pki>,
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, settings(), Arc::new(Pki::new())).await
    }

    /// Another instance on the same database, service key and PKI.
    pub async fn second_instance(&self) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .unwrap();
        Self::spawn_with(pool, settings(), self.pki.clone()).await
    }

    pub async fn spawn_with(pool: PgPool, settings: Settings, pki: Arc<Pki>) -> Self {
        let tls = provisioning_service::tls::server_config(
            &pki.dir.path().join("server.pem"),
            &pki.dir.path().join("server.key"),
        )
        .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = App::new(pool.clone(), Sealer::new(&[0x5e; 32]), settings);
        tokio::spawn(provisioning_service::server::serve_tls(
            app,
            listener,
            tls,
            std::future::pending(),
        ));
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(&pki.ca_pem).unwrap())
            .build()
            .unwrap();
        let app = Self {
            base: format!("https://localhost:{port}"),
            client,
            pool,
            pki,
        };
        app.wait_ready().await;
        app
    }

    async fn wait_ready(&self) {
        for _ in 0..200 {
            if let Ok(r) = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
            {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("service did not become ready");
    }

    // --- the enrollment API ---

    #[allow(clippy::unused_self)] // reads as a step of this app
    pub fn service_sas(&self) -> String {
        let expiry = now() + 300;
        sas::build_token(
            "dps.test",
            expiry,
            Some(POLICY),
            &mut SoftwareKey(POLICY_KEY),
        )
        .unwrap()
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("authorization", self.service_sas());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn enroll(&self, registration_id: &str, ek: &[u8]) -> Value {
        self.enroll_with(enrollment(registration_id, ek)).await
    }

    pub async fn enroll_with(&self, e: IndividualEnrollment) -> Value {
        let (status, body) = self
            .admin(
                Method::PUT,
                &format!("/enrollments/{}", e.registration_id),
                Some(serde_json::to_value(&e).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    // --- the device API ---

    pub fn register_url(&self, registration_id: &str) -> String {
        format!(
            "{}/{ID_SCOPE}/registrations/{registration_id}/register?{API}",
            self.base
        )
    }

    /// `PUT .../register`, with `authorization` if given.
    pub async fn put_register(
        &self,
        registration_id: &str,
        body: &Value,
        authorization: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .put(self.register_url(registration_id))
            .json(body);
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The first register call: returns the authenticationKey blob.
    pub async fn challenge(&self, device: &Device) -> Vec<u8> {
        let (status, body) = self
            .put_register(&device.registration_id, &device.body(), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        STANDARD
            .decode(
                body["authenticationKey"]
                    .as_str()
                    .expect("authenticationKey"),
            )
            .unwrap()
    }

    /// The second register call, with a SAS signed by `signer`: returns (status, body).
    pub async fn register_with<S: Signer>(
        &self,
        device: &Device,
        signer: &mut S,
    ) -> (StatusCode, Value)
    where
        S::Error: std::fmt::Debug,
    {
        let token = device.sas(signer, now() + 60);
        self.put_register(&device.registration_id, &device.body(), Some(&token))
            .await
    }

    pub async fn poll<S: Signer>(
        &self,
        device: &Device,
        operation_id: &str,
        signer: &mut S,
    ) -> (StatusCode, Value)
    where
        S::Error: std::fmt::Debug,
    {
        let token = device.sas(signer, now() + 60);
        let response = self
            .client
            .get(format!(
                "{}/{ID_SCOPE}/registrations/{}/operations/{operation_id}?{API}",
                self.base, device.registration_id
            ))
            .header("authorization", token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn device_state<S: Signer>(
        &self,
        device: &Device,
        signer: &mut S,
    ) -> (StatusCode, Value)
    where
        S::Error: std::fmt::Debug,
    {
        let token = device.sas(signer, now() + 60);
        let response = self
            .client
            .post(format!(
                "{}/{ID_SCOPE}/registrations/{}?{API}",
                self.base, device.registration_id
            ))
            .header("authorization", token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Everything the device API can change, as text, to show a refused request changed nothing.
    pub async fn snapshot(&self) -> String {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT format('%s', t) FROM (
                 SELECT 'e' AS k, registration_id, etag::text AS v FROM enrollments
                 UNION ALL SELECT 'c', registration_id, encode(sealed_key, 'hex') FROM challenges
                 UNION ALL SELECT 'r', registration_id, operation_id::text || etag::text FROM registrations
             ) t ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn enrollment(registration_id: &str, ek: &[u8]) -> IndividualEnrollment {
    IndividualEnrollment {
        registration_id: registration_id.to_owned(),
        device_id: None,
        attestation: Attestation::tpm(ek.to_vec()),
        iot_hub_host_name: None,
        provisioning_status: ProvisioningStatus::Enabled,
        etag: None,
        created_date_time_utc: None,
        last_updated_date_time_utc: None,
        extra: serde_json::Map::new(),
    }
}

/// What a device presents: its registration id, EK and SRK.
#[derive(Clone)]
pub struct Device {
    pub registration_id: String,
    pub ek: Vec<u8>,
    pub srk: Vec<u8>,
}

impl Device {
    pub fn of(tpm: &mut Tpm) -> Self {
        let ek = tpm.endorsement_key().unwrap();
        let srk = tpm.storage_root_key().unwrap();
        Self {
            registration_id: RegistrationId::from_endorsement_key(&ek)
                .as_str()
                .to_owned(),
            ek,
            srk,
        }
    }

    pub fn body(&self) -> Value {
        serde_json::to_value(DeviceRegistration {
            registration_id: self.registration_id.clone(),
            tpm: Some(TpmAttestation {
                endorsement_key: Base64Bytes(self.ek.clone()),
                storage_root_key: Base64Bytes(self.srk.clone()),
            }),
            payload: None,
        })
        .unwrap()
    }

    pub fn sas<S: Signer>(&self, signer: &mut S, expiry: u64) -> String
    where
        S::Error: std::fmt::Debug,
    {
        let resource = sas::registration_resource(ID_SCOPE, &self.registration_id);
        sas::build_token(&resource, expiry, Some(REGISTRATION_KEY_NAME), signer).unwrap()
    }
}

/// A TPM on its own swtpm; the context drops before the simulator.
pub struct TestTpm {
    pub tpm: Tpm,
    /// Kept for its `Drop`, which stops the simulator after the context.
    _swtpm: Swtpm,
}

impl TestTpm {
    /// The recorded TPM (fast: no manufacturing).
    pub fn recorded() -> Self {
        let swtpm = Swtpm::start_from_state(&fixture_state());
        Self {
            tpm: Tpm::open(&swtpm.tcti()).unwrap(),
            _swtpm: swtpm,
        }
    }

    /// A newly manufactured TPM (another device).
    pub fn fresh() -> Self {
        let swtpm = Swtpm::start();
        Self {
            tpm: Tpm::open(&swtpm.tcti()).unwrap(),
            _swtpm: swtpm,
        }
    }
}
