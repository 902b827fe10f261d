//! The service running in-process (HTTPS on 127.0.0.1:0, throwaway CA, a fresh database), and
//! the device and factory calls the tests make, named after the protocol steps.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dps_protocol::sas::{self, Signer, SoftwareKey};
use dps_protocol::wire::{RegistrationOperationStatus, TpmChallenge};
use provisioning_service::allocation::LinkedHubs;
use provisioning_service::enrollment::IndividualEnrollment;
use provisioning_service::registration::{self, StepError};
use provisioning_service::sealing::Sealer;
use provisioning_service::settings::AccessPolicy;
use provisioning_service::{App, Settings};
use rand::rngs::OsRng;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use sqlx::types::time::OffsetDateTime;
use sqlx::PgPool;

use crate::device::{enrollment, Device};
use crate::now;
use crate::pki::Pki;

pub const ID_SCOPE: &str = "0ne00000TST";
pub const HUBS: [&str; 2] = ["hub-a.example.net", "hub-b.example.net"];
pub const POLICY: &str = "provisioningserviceowner";
pub const POLICY_KEY: &[u8] = b"factory-policy-key-0123456789abc";
pub const API: &str = "api-version=2019-03-31";

/// The service key every test instance seals with (instances of one test share it).
pub const SERVICE_KEY: [u8; 32] = [0x5e; 32];

/// The settings of a test instance: the defaults, two linked hubs, one access policy.
#[must_use]
pub fn settings() -> Settings {
    let hubs = LinkedHubs::new(HUBS.map(String::from).to_vec()).unwrap();
    let mut s = Settings::new(ID_SCOPE, hubs);
    s.hub_auth_secret = Some(HUB_AUTH_SECRET.to_owned().into());
    s.access_policies = vec![AccessPolicy {
        name: POLICY.to_owned(),
        key: POLICY_KEY.to_vec().into(),
    }];
    "dps.test".clone_into(&mut s.service_host_name);
    s
}

/// The secret in the test instances' hook URLs.
pub const HUB_AUTH_SECRET: &str = "test-hub-auth-secret-0123";

/// One service instance.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub pki: Arc<Pki>,
    /// The instance's state, for tests that call the domain directly (to assert a refusal's
    /// reason, which the wire does not carry).
    pub app: App,
    /// The brokers' hook listener with its secret, `http://127.0.0.1:PORT/SECRET`.
    pub hook_base: String,
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> Self {
        Self::spawn_with(pool, settings(), Arc::new(Pki::new())).await
    }

    /// An instance with the test settings as `configure` changes them.
    pub async fn spawn_configured(pool: PgPool, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = settings();
        configure(&mut settings);
        Self::spawn_with(pool, settings, Arc::new(Pki::new())).await
    }

    /// Another instance on the same database, settings, service key and PKI.
    pub async fn second_instance(&self) -> Self {
        self.instance_sealed_with(Sealer::new(&SERVICE_KEY)).await
    }

    /// Another instance on the same database, settings and PKI, with its own service keys and
    /// its own pool (as the service makes it).
    pub async fn instance_sealed_with(&self, sealer: Sealer) -> Self {
        let pool = provisioning_service::store::pool_options(10, std::time::Duration::from_secs(2))
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .unwrap();
        Self::spawn_sealed(pool, self.app.settings().clone(), self.pki.clone(), sealer).await
    }

    /// An instance with these settings and TLS files. The service's log goes to the test's
    /// output when `TEST_LOG` is set (a filter, e.g. `TEST_LOG=info`).
    pub async fn spawn_with(pool: PgPool, settings: Settings, pki: Arc<Pki>) -> Self {
        Self::spawn_sealed(pool, settings, pki, Sealer::new(&SERVICE_KEY)).await
    }

    /// An instance sealing with `sealer` (a rotated key ring, say).
    pub async fn spawn_sealed(
        pool: PgPool,
        settings: Settings,
        pki: Arc<Pki>,
        sealer: Sealer,
    ) -> Self {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let tls =
            provisioning_service::tls::server_config(&pki.cert_file(), &pki.key_file()).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = App::new(pool.clone(), sealer, settings).unwrap();
        tokio::spawn(provisioning_service::server::serve_tls(
            app.clone(),
            listener,
            tls,
            std::future::pending(),
        ));
        let hooks = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hook_base = format!(
            "http://127.0.0.1:{}/{HUB_AUTH_SECRET}",
            hooks.local_addr().unwrap().port()
        );
        tokio::spawn(provisioning_service::server::serve_plain(
            provisioning_service::http::hub_hooks::router(app.clone()),
            hooks,
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
            app,
            hook_base,
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

    /// The metrics in Prometheus' text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.app.metrics().render(&self.pool)
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

    /// `PUT .../register` with what `device` presents, to finish with headers of one's own and
    /// read the whole response (status, headers, body).
    pub fn register_request(&self, device: &Device) -> reqwest::RequestBuilder {
        self.client
            .put(self.register_url(&device.registration_id))
            .json(&device.body())
    }

    /// The first register call: returns the whole challenge (its attestation half too).
    pub async fn full_challenge(&self, device: &Device) -> TpmChallenge {
        let (status, body) = self
            .put_register(&device.registration_id, &device.body(), None)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        serde_json::from_value(body).expect("a TPM challenge")
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

    /// The recorded TPM, enrolled here, after answering its challenge: the TPM holding the issued
    /// key, its device, and a SAS token signed with that key for the caller's register call.
    pub async fn challenged_device(&self) -> (crate::TestTpm, Device, String) {
        let mut t = crate::TestTpm::recorded();
        let device = Device::of(&mut t.tpm);
        self.enroll(&device.registration_id, &device.ek).await;
        let blob = self.challenge(&device).await;
        t.tpm
            .import_authentication_key(&blob)
            .expect("the TPM imports the service's blob");
        let token = device.sas(&mut t.tpm, now() + 60);
        (t, device, token)
    }

    /// Challenge → import in the TPM → register with a TPM-signed SAS; returns the operation id.
    /// The answer is 200 with the decision, or 202 `assigning` while a webhook decides.
    pub async fn provision(&self, t: &mut crate::TestTpm, device: &Device) -> String {
        let blob = self.challenge(device).await;
        t.tpm
            .import_authentication_key(&blob)
            .expect("the TPM imports the service's blob");
        let (status, body) = self.register_with(device, &mut t.tpm).await;
        // 202 whatever was decided, as DPS answers (docs/protocol.md §2).
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let assigning = body["status"] == "assigning";
        assert_eq!(body["registrationState"].is_null(), assigning, "{body}");
        body["operationId"]
            .as_str()
            .expect("operationId")
            .to_owned()
    }

    /// The second register call, with a SAS signed by `signer`: returns (status, body).
    pub async fn register_with<S: Signer<Error: std::fmt::Debug>>(
        &self,
        device: &Device,
        signer: &mut S,
    ) -> (StatusCode, Value) {
        let token = device.sas(signer, now() + 60);
        self.put_register(&device.registration_id, &device.body(), Some(&token))
            .await
    }

    /// `GET .../operations/{operationId}` with a SAS signed by `signer`.
    pub async fn poll<S: Signer<Error: std::fmt::Debug>>(
        &self,
        device: &Device,
        operation_id: &str,
        signer: &mut S,
    ) -> (StatusCode, Value) {
        let path = format!("/operations/{operation_id}");
        self.sas_call(Method::GET, &path, device, signer).await
    }

    /// `POST /{idScope}/registrations/{id}` with a SAS signed by `signer`.
    pub async fn device_state<S: Signer<Error: std::fmt::Debug>>(
        &self,
        device: &Device,
        signer: &mut S,
    ) -> (StatusCode, Value) {
        self.sas_call(Method::POST, "", device, signer).await
    }

    /// A SAS-authenticated device call on `/{idScope}/registrations/{id}{tail}`.
    async fn sas_call<S: Signer<Error: std::fmt::Debug>>(
        &self,
        method: Method,
        tail: &str,
        device: &Device,
        signer: &mut S,
    ) -> (StatusCode, Value) {
        let token = device.sas(signer, now() + 60);
        let url = format!(
            "{}/{ID_SCOPE}/registrations/{}{tail}?{API}",
            self.base, device.registration_id
        );
        let response = self
            .client
            .request(method, url)
            .header("authorization", token)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    // --- the domain, called directly: its verdict names the reason a 401 does not carry ---

    /// What the challenge step decides for `device` (writes, if it admits it).
    pub async fn challenge_verdict(&self, device: &Device) -> Result<Vec<u8>, StepError> {
        let body = serde_json::from_value(device.body()).unwrap();
        let request = registration::parse_request(&device.registration_id, body)?;
        registration::challenge(
            self.app.registrar(),
            &request,
            "127.0.0.1",
            OffsetDateTime::now_utc(),
        )
        .await
        .map(|c| c.authentication_key)
    }

    /// What the SAS step decides for `device` presenting `authorization`.
    pub async fn register_verdict(
        &self,
        device: &Device,
        authorization: &str,
    ) -> Result<RegistrationOperationStatus, StepError> {
        let body = serde_json::from_value(device.body()).unwrap();
        let request = registration::parse_request(&device.registration_id, body)?;
        let token = registration::parse_sas(authorization)?;
        registration::register(
            self.app.registrar(),
            &request,
            &token,
            OffsetDateTime::now_utc(),
            &mut OsRng,
        )
        .await
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
