//! The decision logic of each device step (docs/protocol.md §1–3). Handlers parse HTTP; this module
//! decides, calling `dps-protocol` for the crypto and `store` for the state, and names every
//! refusal ([`Refusal`]). Each step uses one connection and at most two statements, with the
//! RSA or HMAC work before or between them and no transaction held across it
//! (`store::device_steps`).
//!
//! Uses: `allocation`, `cpu`, `enrollment`, `issuance`, `metrics`, `sealing`, `settings`, `store`,
//! `telemetry` (the layers table, docs/architecture.md).

mod admission;
mod assignment;
pub mod attestation;
mod certificate;
mod group_admission;
mod recent;
mod refusal;
pub mod webhook;

pub use crate::store::enrollments::ek_hash;
pub use admission::admit;
use assignment::DeviceContext;
pub use recent::RecentChallenges;
pub use refusal::{Refusal, StepError};
use webhook::WebhookClient;

use std::sync::Arc;

use dps_protocol::ek_cert::MAX_PRESENTED_CHAIN;
use dps_protocol::sas::{self, SasToken, VerifyPolicy, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::Public;
use dps_protocol::wire::{
    AttestationChallenge, Base64Bytes, DeviceRegistration, DeviceRegistrationResult,
    KeyCertification, Quote, RegistrationOperationStatus, RegistrationStatus,
    RegistrationSubstatus, TpmRegistrationResult,
};
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand_core::CryptoRngCore;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::cpu::{Core, CpuPool};
use crate::metrics::Metrics;
use crate::sealing::Sealer;
use crate::settings::Settings;
use crate::store::device_steps::{self, ChallengeGate, KeyCandidate, KeySource, RegisterView};
use crate::store::lease::{Db, Lease};
use crate::store::registrations::{ChallengeRow, RegistrationRow, Status, Substatus};
use crate::store::throttle;
use crate::timestamp;

/// What the device steps use: the database, the service key, the settings, the bound on
/// CPU-bound jobs, the challenges this instance issued, its metrics and the webhook client.
/// Cheap to clone: a decision a webhook makes runs on after its request
/// (`assignment::run_webhook`).
#[derive(Clone, Debug)]
pub struct Registrar {
    db: Db,
    sealer: Arc<Sealer>,
    settings: Arc<Settings>,
    cpu: Arc<CpuPool>,
    recent: Arc<RecentChallenges>,
    metrics: Arc<Metrics>,
    webhooks: WebhookClient,
}

impl Registrar {
    #[must_use]
    pub fn new(
        db: Db,
        sealer: Arc<Sealer>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
        webhooks: WebhookClient,
    ) -> Self {
        Self {
            db,
            sealer,
            settings,
            cpu: Arc::new(CpuPool::new()),
            recent: Arc::new(RecentChallenges::default()),
            metrics,
            webhooks,
        }
    }

    /// A connection for one step (`store::lease`).
    pub async fn acquire(&self) -> Result<Lease<'_>, sqlx::Error> {
        self.db.acquire().await
    }

    #[must_use]
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The bound on CPU-bound jobs, the challenge's RSA work among them (`cpu`).
    #[must_use]
    pub fn cpu(&self) -> &CpuPool {
        &self.cpu
    }

    /// The challenges this instance issued, until answered (`recent`).
    #[must_use]
    pub fn recent_challenges(&self) -> &RecentChallenges {
        &self.recent
    }

    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The allocation webhooks' HTTPS client (`webhook`).
    #[must_use]
    pub fn webhooks(&self) -> &WebhookClient {
        &self.webhooks
    }
}

/// A parsed, validated register request body.
#[derive(Debug)]
pub struct RegisterRequest {
    pub registration_id: RegistrationId,
    /// Required for the challenge; optional with a SAS (aziot-identityd sends only the
    /// registration id then), and checked against the key's TPM when present.
    pub tpm: Option<TpmKeys>,
    /// The device's `payload`, for a custom allocation webhook.
    pub payload: Option<serde_json::Value>,
    /// DPS 2026-04-01: a PKCS#10 request (DER) for a certificate.
    pub csr: Option<Vec<u8>>,
}

/// The EK and SRK a device presents, as sent and parsed, and its EK certificate if it sent one.
#[derive(Debug)]
pub struct TpmKeys {
    pub ek_bytes: Vec<u8>,
    pub srk_bytes: Vec<u8>,
    pub ek: Public,
    pub srk: Public,
    /// As read from the TPM (parsed only when a group is asked).
    pub ek_certificate: Option<Vec<u8>>,
    pub ek_certificate_chain: Vec<Vec<u8>>,
    /// The attestation key shown with the challenge request (this service's extension).
    pub attestation_key: Option<attestation::ShownKey>,
    /// The quote sent with the SAS (extension).
    pub quote: Option<Quote>,
    /// The certification of the CSR's key sent with the SAS (extension).
    pub certify: Option<KeyCertification>,
}

/// Parses a registration id as DPS allows it.
pub fn parse_registration_id(id: &str) -> Result<RegistrationId, Refusal> {
    RegistrationId::parse(id).map_err(Refusal::InvalidRegistrationId)
}

/// Parses an EK or SRK and checks, with `check`, that it is a key this service can seal to.
fn parse_key(
    field: &'static str,
    bytes: &[u8],
    check: impl FnOnce(&Public) -> Result<(), dps_protocol::CryptoError>,
) -> Result<Public, Refusal> {
    let key = Public::from_tpm2b(bytes).map_err(|e| Refusal::InvalidKey {
        field,
        source: e.into(),
    })?;
    check(&key).map_err(|source| Refusal::InvalidKey { field, source })?;
    Ok(key)
}

/// Validates a register body against the path's registration id.
pub fn parse_request(path_id: &str, body: DeviceRegistration) -> Result<RegisterRequest, Refusal> {
    let registration_id = parse_registration_id(path_id)?;
    // Compared as ids: any case, one registration.
    if RegistrationId::parse(&body.registration_id).as_ref() != Ok(&registration_id) {
        return Err(Refusal::RegistrationIdMismatch);
    }
    let tpm = match body.tpm {
        None => None,
        Some(tpm) => {
            // Refused before any work: each certificate is a candidate of the path search.
            if tpm.endorsement_key_certificate_chain.len() > MAX_PRESENTED_CHAIN {
                return Err(Refusal::EkCertificateChainTooLong);
            }
            let (ek_bytes, srk_bytes) = (tpm.endorsement_key.0, tpm.storage_root_key.0);
            Some(TpmKeys {
                // The EK receives a credential, the SRK a duplicate (each RSA, or ECC
                // P-256/P-384).
                ek: parse_key("endorsementKey", &ek_bytes, |k| k.check_seed_key("EK"))?,
                srk: parse_key("storageRootKey", &srk_bytes, |k| k.check_seed_key("SRK"))?,
                ek_bytes,
                srk_bytes,
                ek_certificate: tpm.endorsement_key_certificate.map(|c| c.0),
                ek_certificate_chain: tpm
                    .endorsement_key_certificate_chain
                    .into_iter()
                    .map(|c| c.0)
                    .collect(),
                attestation_key: tpm
                    .attestation_key
                    .map(|k| attestation::parse_key(k.0))
                    .transpose()?,
                quote: tpm.quote,
                certify: tpm.certify,
            })
        }
    };
    Ok(RegisterRequest {
        registration_id,
        tpm,
        payload: body.payload,
        csr: body.csr.map(|c| c.0),
    })
}

/// Parses a device's `Authorization` header.
pub fn parse_sas(header: &str) -> Result<SasToken, Refusal> {
    SasToken::parse(header).map_err(Refusal::MalformedSas)
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// What the challenge step answers: the `authenticationKey` blob, and the attestation
/// challenge when the device showed an attestation key and its policy asks for a quote.
#[derive(Debug)]
pub struct Challenge {
    pub authentication_key: Vec<u8>,
    pub attestation: Option<AttestationChallenge>,
}

/// A challenge issued on a core: the row to record and its attestation half.
struct NewChallenge {
    row: ChallengeRow,
    attestation: Option<attestation::Sealed>,
}

/// Step 1, no SAS: issue a fresh HMAC key wrapped for this one TPM; returns the blob, and the
/// attestation challenge when the device showed an attestation key and its enrollment's policy
/// asks for a quote (`attestation`).
///
/// With a core free on arrival, the key is issued first (the RSA work, 70 µs) and offered to
/// the step's one statement (`store::device_steps::challenge_gate`), which counts the request
/// against the client address's throttle, reads the enrollment and records the challenge if
/// both admit it. Otherwise (cores busy: a burst, or a flood) the gate comes first and only an
/// admitted request waits for a core, so refused requests cost no RSA work when it is scarce;
/// the challenge is then a second statement. A device admitted by an enrollment group is
/// recorded by a second statement too, after its EK certificate is checked.
///
/// Anyone who knows a device's registration id and EK_pub can ask for challenges in its name
/// (they are useless without the TPM). So the budget is the asking client address's, never the
/// device's, and a new challenge joins the device's live ones instead of replacing them: a
/// stranger's flood from elsewhere neither throttles the device nor evicts the challenge it is
/// answering (`store::device_steps::put_challenge`).
///
/// A challenge for an individual enrollment is remembered here with what the gate read
/// (`recent`), for the SAS step to skip its read if the device comes back to this instance.
pub async fn challenge(
    registrar: &Registrar,
    req: &RegisterRequest,
    client_address: &str,
    now: OffsetDateTime,
) -> Result<Challenge, StepError> {
    let id = req.registration_id.as_str();
    let tpm = req.tpm.as_ref().ok_or(Refusal::AttestationRequired)?;
    let ek_hash = ek_hash(&tpm.ek_bytes);
    let offered = registrar
        .cpu()
        .core_now()
        .map(|core| issue(registrar, tpm, id, &ek_hash, client_address, now, core))
        .transpose()?;
    let mut conn = registrar.acquire().await?;
    let limit = registrar.settings().registration_limit;
    let gate = device_steps::challenge_gate(
        &mut conn,
        id,
        &format!("challenge:{client_address}"),
        limit,
        now,
        offered.as_ref().map(|c| &c.row),
    )
    .await?;
    let ChallengeGate {
        counted,
        enrollment,
        previous,
        registration_etag,
        attested,
        put,
    } = gate;
    if let Some(retry_after) = counted.refusal(limit, now) {
        return Err(Refusal::Throttled { retry_after }.into());
    }
    // An individual enrollment wins; without one, an EK certificate may get the device into a
    // TPM enrollment group.
    let (group_id, admitted, extra) = if enrollment.is_none() && tpm.ek_certificate.is_some() {
        let (group_id, extra) =
            group_admission::admit_to_group(registrar, &mut conn, id, tpm).await?;
        (Some(group_id), None, extra)
    } else {
        let admitted = admit(&mut conn, enrollment, &ek_hash).await?;
        let extra = admitted.extra.clone();
        (None, Some(admitted), extra)
    };
    let policy = attestation::policy_of(&extra)?;
    let certify = certificate::wants_residency_proof(registrar.settings(), &extra);
    // Called once, on whichever path records the challenge.
    let remember = |row: &ChallengeRow| {
        if let Some(enrollment) = admitted {
            registrar.recent_challenges().remember(
                row,
                enrollment,
                previous,
                attested,
                registration_etag,
                now,
            );
        }
    };
    let answer = |issued: NewChallenge| Challenge {
        authentication_key: issued.row.authentication_key,
        attestation: attestation::challenge_for(&policy, certify, issued.attestation.as_ref()),
    };
    let mut issued = match offered {
        Some(issued) if put => {
            conn.done();
            remember(&issued.row);
            return Ok(answer(issued));
        }
        Some(issued) => issued,
        None => {
            // With a core free now, the step keeps its connection for the write after the
            // work; otherwise the connection goes to the next request while the work waits
            // for a core: a burst of challenges must queue for CPU, not hold the connections
            // registrations and polls need.
            let (core, kept) = if let Some(core) = registrar.cpu().core_now() {
                (core, Some(conn))
            } else {
                conn.done();
                (registrar.cpu().core().await?, None)
            };
            let issued = issue(registrar, tpm, id, &ek_hash, client_address, now, core)?;
            conn = match kept {
                Some(conn) => conn,
                None => registrar.acquire().await?,
            };
            issued
        }
    };
    issued.row.group_id = group_id;
    device_steps::put_challenge(&mut conn, &issued.row).await?;
    conn.done();
    remember(&issued.row);
    Ok(answer(issued))
}

/// Issues a challenge on `core`: the RSA work (two OAEP encryptions, a third for an attestation
/// key) and the sealing of the new key, as the row to record (with no group yet).
fn issue(
    registrar: &Registrar,
    tpm: &TpmKeys,
    id: &str,
    ek_hash: &[u8],
    client_address: &str,
    now: OffsetDateTime,
    core: Core,
) -> Result<NewChallenge, Refusal> {
    let (blob, sealed_key, attested) = core
        .run_here(|| {
            let mut rng = rand::rngs::OsRng;
            let issued = AuthenticationKey::issue(&tpm.ek, &tpm.srk, &mut rng)?;
            let sealed =
                registrar
                    .sealer()
                    .seal(issued.device_key.as_ref(), id.as_bytes(), &mut rng);
            let attested = attestation::seal(tpm, &mut rng)?;
            Ok((issued.blob.to_bytes(), sealed, attested))
        })
        .map_err(|source| Refusal::InvalidKey {
            field: "tpm",
            source,
        })?;
    let row = ChallengeRow {
        challenge_id: Uuid::new_v4(),
        registration_id: id.to_owned(),
        client_address: client_address.to_owned(),
        ek_hash: ek_hash.to_vec(),
        storage_root_key: tpm.srk_bytes.clone(),
        sealed_key,
        key_id: registrar.sealer().key_id().to_owned(),
        authentication_key: blob,
        issued_at: now,
        expires_at: now + registrar.settings().challenge_ttl(),
        group_id: None,
        attestation_key: tpm.attestation_key.as_ref().map(|k| k.bytes.clone()),
        attestation_nonce_hash: attested.as_ref().map(|a| a.nonce_hash.to_vec()),
    };
    Ok(NewChallenge {
        row,
        attestation: attested,
    })
}

/// Checks `token` with a sealed key.
fn verify(
    registrar: &Registrar,
    token: &SasToken,
    id: &str,
    sealed: &[u8],
    key_id: &str,
    now: OffsetDateTime,
) -> Result<(), StepError> {
    let key = registrar
        .sealer()
        .open(sealed, key_id, id.as_bytes())
        .inspect_err(|_| registrar.metrics().sealing_failure())?;
    let settings = registrar.settings();
    let resource = sas::registration_resource(&settings.id_scope, id);
    let policy = VerifyPolicy {
        resource: &resource,
        key_name: Some(REGISTRATION_KEY_NAME),
        now: unix(now),
        max_skew: settings.clock_skew_secs,
        max_lifetime: settings.sas_max_lifetime_secs,
    };
    token
        .verify(&key, &policy)
        .map_err(|e| Refusal::SasRejected(e).into())
}

/// Finds the key `token` was signed with among the device's `candidates`: a live challenge's
/// key (newest first), else the key the device last registered with; older keys no longer
/// exist anywhere. If the body named a TPM (`presented`: EK hash and SRK), the key must have
/// been issued to that TPM.
fn proven_key<'c>(
    registrar: &Registrar,
    token: &SasToken,
    id: &str,
    candidates: &'c [KeyCandidate],
    presented: Option<&(Vec<u8>, &[u8])>,
    now: OffsetDateTime,
) -> Result<&'c KeyCandidate, StepError> {
    let issued_here = |k: &&KeyCandidate| {
        presented.is_none_or(|(ek, srk)| k.ek_hash == *ek && k.storage_root_key == *srk)
    };
    let mut refusal = Refusal::NoLiveKey;
    for candidate in candidates.iter().filter(issued_here) {
        match verify(
            registrar,
            token,
            id,
            &candidate.sealed_key,
            &candidate.key_id,
            now,
        ) {
            Ok(()) => return Ok(candidate),
            Err(StepError::Refused(r @ Refusal::SasRejected(_))) => refusal = r,
            Err(other) => return Err(other),
        }
    }
    Err(refusal.into())
}

/// How many times the SAS step reads and writes again when the device's state changed between
/// its read and its write (a concurrent registration of the same device).
const ASSIGN_ATTEMPTS: usize = 3;

/// Step 2, with SAS: the device proved it holds the issued key; assign it. One connection, two
/// statements (`store::device_steps`): every key candidate and the enrollment in one read, then
/// a write that re-checks what the read decided on; if that changed, read again.
///
/// If this instance issued the device's challenge (`recent`), it first tries what it
/// remembers in place of the read: then the registration is one statement here. Any refusal or
/// change on that path is decided again on a fresh read, so a remembered view can only save the
/// read, never change an answer.
pub async fn register(
    registrar: &Registrar,
    req: &RegisterRequest,
    token: &SasToken,
    now: OffsetDateTime,
    rng: &mut (impl CryptoRngCore + Send),
) -> Result<RegistrationOperationStatus, StepError> {
    let id = req.registration_id.as_str();
    let presented = req
        .tpm
        .as_ref()
        .map(|t| (ek_hash(&t.ek_bytes), t.srk_bytes.as_slice()));
    let mut conn = registrar.acquire().await?;
    let step = SasStep {
        registrar,
        req,
        token,
        presented: presented.as_ref(),
        now,
    };
    let remembered = match registrar.recent_challenges().recall(id, now) {
        Some(view) => {
            let written = match step.attempt(&mut conn, view, rng).await {
                Ok(written) => written,
                Err(StepError::Refused(_)) => None,
                Err(other) => return Err(other),
            };
            registrar.metrics().remembered(written.is_some());
            written
        }
        None => None,
    };
    let stepped = match remembered {
        Some(stepped) => stepped,
        None => step
            .read_and_attempt(&mut conn, rng)
            .await
            .inspect_err(|e| {
                if let StepError::Refused(Refusal::Attestation(_)) = e {
                    registrar.metrics().attestation_verdict("refused");
                }
            })?,
    };
    conn.done();
    let (row, webhook) = match stepped {
        Stepped::Wrote(row, webhook) => (row, webhook),
        Stepped::Deciding(operation_id) => {
            tracing::info!(
                registration_id = id,
                "registered again while its webhook decides: the same operation"
            );
            return Ok(RegistrationOperationStatus {
                operation_id: operation_id.to_string(),
                status: RegistrationStatus::Assigning,
                registration_state: None,
            });
        }
    };
    registrar.recent_challenges().forget(id);
    assignment::count(registrar, &row);
    if let Some(record) = &row.attestation {
        registrar
            .metrics()
            .attestation_verdict(attestation::verdict_label(record.verdict));
    }
    if let Some(job) = webhook {
        tracing::info!(registration_id = id, "asking the allocation webhook");
        tokio::spawn(assignment::run_webhook(registrar.clone(), job, row.clone()));
    } else {
        tracing::info!(
            registration_id = id,
            status = ?row.status,
            hub = row.assigned_hub.as_deref(),
            "device registered"
        );
    }
    // Decided at once (no webhook to ask): the `202` carries the decision, so a device that
    // reads the body needs no poll; aziot-identityd polls once regardless (docs/protocol.md §2).
    Ok(if row.status == Status::Assigning {
        RegistrationOperationStatus {
            operation_id: row.operation_id.to_string(),
            status: RegistrationStatus::Assigning,
            registration_state: None,
        }
    } else {
        operation_result(&row)
    })
}

/// What one SAS step knows besides its connection and view.
struct SasStep<'a> {
    registrar: &'a Registrar,
    req: &'a RegisterRequest,
    token: &'a SasToken,
    /// The EK hash and SRK the body named, if it named a TPM.
    presented: Option<&'a (Vec<u8>, &'a [u8])>,
    now: OffsetDateTime,
}

/// What a SAS step did.
#[allow(clippy::large_enum_variant)] // returned once per step and taken apart at once
enum Stepped {
    /// Wrote the registration, and the webhook to ask if the decision is the webhook's.
    Wrote(RegistrationRow, Option<assignment::WebhookJob>),
    /// Found a webhook's decision under way for the key the device proved: that operation,
    /// asked again. Nothing written, nobody asked: one webhook call per registration at a time.
    Deciding(Uuid),
}

impl SasStep<'_> {
    /// Reads the device's state and decides on it, reading again if it changed before the
    /// write: at most [`ASSIGN_ATTEMPTS`] reads, then 409.
    async fn read_and_attempt(
        &self,
        conn: &mut PgConnection,
        rng: &mut (impl CryptoRngCore + Send),
    ) -> Result<Stepped, StepError> {
        let id = self.req.registration_id.as_str();
        for _ in 0..ASSIGN_ATTEMPTS {
            let view = device_steps::register_view(conn, id, self.now).await?;
            if let Some(written) = self.attempt(conn, view, rng).await? {
                return Ok(written);
            }
        }
        Err(Refusal::Contended.into())
    }

    /// One decision on `view` and its write: the registration as written, or `None` if
    /// something the view showed changed before the write (or the device just joined its group)
    /// and the step must read again.
    async fn attempt(
        &self,
        conn: &mut PgConnection,
        view: RegisterView,
        rng: &mut (impl CryptoRngCore + Send),
    ) -> Result<Option<Stepped>, StepError> {
        let (registrar, id, now) = (self.registrar, self.req.registration_id.as_str(), self.now);
        let key = proven_key(
            registrar,
            self.token,
            id,
            &view.candidates,
            self.presented,
            now,
        )?;
        if let (None, Some(group_id)) = (&view.enrollment, &key.group_id) {
            // Proven: the device joins the group that admitted it, then is read again.
            group_admission::join(conn, id, self.req.tpm.as_ref(), key, group_id, now).await?;
            return Ok(None);
        }
        let enrollment = admit(conn, view.enrollment, &key.ek_hash).await?;
        // Still admitted, and a webhook already decides for this key: that decision's operation.
        if let (KeySource::Registration { .. }, Some(operation_id)) = (key.source, view.deciding) {
            return Ok(Some(Stepped::Deciding(operation_id)));
        }
        let requested =
            certificate::requested(registrar.settings(), self.req, key, &enrollment.extra)?;
        let quote = self.req.tpm.as_ref().and_then(|t| t.quote.as_ref());
        let attested = attestation::judge(
            &attestation::policy_of(&enrollment.extra)?,
            key,
            &view.candidates,
            quote,
            view.attested.as_ref(),
            now,
        )?;
        // A key sealed under a previous service key moves to the current one (sealing.rs).
        let (sealed_key, key_id) = registrar
            .sealer()
            .reseal(
                key.sealed_key.clone(),
                key.key_id.clone(),
                id.as_bytes(),
                rng,
            )
            .inspect_err(|_| registrar.metrics().sealing_failure())?;
        let device = DeviceContext {
            storage_root_key: key.storage_root_key.clone(),
            payload: self.req.payload.clone(),
        };
        let (decided, webhook) =
            assignment::plan(registrar, id, &enrollment, view.previous.as_ref(), device);
        if webhook.is_some() && requested.is_some() {
            return Err(Refusal::Csr(crate::issuance::CsrRefusal::CustomAllocation).into());
        }
        if webhook.is_some() {
            // Each such step is a call to the owner's webhook: at most so many per device.
            let limit = registrar.settings().webhook_limit;
            let bucket = format!("webhook:{id}");
            if let Some(retry_after) = throttle::hit(conn, &bucket, limit, now).await? {
                return Err(Refusal::Throttled { retry_after }.into());
            }
        }
        let mut row = RegistrationRow {
            registration_id: id.to_owned(),
            operation_id: Uuid::new_v4(),
            status: Status::Assigning,
            substatus: None,
            assigned_hub: None,
            device_id: None,
            ek_hash: key.ek_hash.clone(),
            storage_root_key: key.storage_root_key.clone(),
            sealed_key,
            key_id,
            authentication_key: key.authentication_key.clone(),
            error_code: None,
            error_message: None,
            etag: Uuid::nil(),
            created_at: now,
            updated_at: now,
            payload: None,
            initial_twin: None,
            decide_by: webhook
                .as_ref()
                .map(|_| assignment::decide_by(registrar, now)),
            attestation: attested.map(sqlx::types::Json),
            certificate_chain: None,
        };
        decided.apply(&mut row, now);
        let issued = certificate::issue(requested.as_ref(), &mut row, rng)?;
        let written = device_steps::assign(
            conn,
            &row,
            key.source,
            view.observed.as_ref(),
            issued.as_ref(),
        )
        .await?;
        Ok(written.map(|row| Stepped::Wrote(row, webhook)))
    }
}

/// The registration state of a device that authenticates with the key it registered with: one
/// statement, which also counts the call against the (registration, client address) budget.
async fn authenticated_state(
    registrar: &Registrar,
    id: &RegistrationId,
    token: &SasToken,
    client_address: &str,
    now: OffsetDateTime,
) -> Result<RegistrationRow, StepError> {
    let id = id.as_str();
    let limit = registrar.settings().poll_limit;
    let mut conn = registrar.acquire().await?;
    let polled = device_steps::poll(&mut conn, id, client_address, limit, now)
        .await?
        .ok_or(Refusal::NoLiveKey)?;
    conn.done();
    let row = polled.registration;
    verify(registrar, token, id, &row.sealed_key, &row.key_id, now)?;
    if let Some(retry_after) = polled.counted.refusal(limit, now) {
        return Err(Refusal::Throttled { retry_after }.into());
    }
    Ok(assignment::settle_overdue(registrar, row, now).await?)
}

/// `GET .../operations/{operationId}`.
pub async fn operation_status(
    registrar: &Registrar,
    id: &RegistrationId,
    operation_id: &str,
    token: &SasToken,
    client_address: &str,
    now: OffsetDateTime,
) -> Result<RegistrationOperationStatus, StepError> {
    let row = authenticated_state(registrar, id, token, client_address, now).await?;
    if row.operation_id.to_string() != operation_id.to_ascii_lowercase() {
        return Err(Refusal::UnknownOperation.into());
    }
    Ok(operation_result(&row))
}

/// A registration row as an operation's status, with its registration state and the
/// certificate issued for it (which a status lookup does not return, as in DPS).
fn operation_result(row: &RegistrationRow) -> RegistrationOperationStatus {
    let mut state = registration_result(row);
    state.issued_certificate_chain = row
        .certificate_chain
        .as_ref()
        .map(|chain| chain.iter().cloned().map(Base64Bytes).collect());
    RegistrationOperationStatus {
        operation_id: row.operation_id.to_string(),
        status: state.status,
        registration_state: Some(state),
    }
}

/// `POST /{idScope}/registrations/{registrationId}`.
pub async fn device_state(
    registrar: &Registrar,
    id: &RegistrationId,
    token: &SasToken,
    client_address: &str,
    now: OffsetDateTime,
) -> Result<DeviceRegistrationResult, StepError> {
    Ok(registration_result(
        &authenticated_state(registrar, id, token, client_address, now).await?,
    ))
}

impl From<Status> for RegistrationStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Unassigned => Self::Unassigned,
            Status::Assigning => Self::Assigning,
            Status::Assigned => Self::Assigned,
            Status::Failed => Self::Failed,
            Status::Disabled => Self::Disabled,
        }
    }
}

impl From<Substatus> for RegistrationSubstatus {
    fn from(s: Substatus) -> Self {
        match s {
            Substatus::InitialAssignment => Self::InitialAssignment,
            Substatus::DeviceDataMigrated => Self::DeviceDataMigrated,
            Substatus::DeviceDataReset => Self::DeviceDataReset,
            Substatus::ReprovisionedToInitialAssignment => Self::ReprovisionedToInitialAssignment,
        }
    }
}

/// A registration row as the wire's `registrationState`.
#[must_use]
pub fn registration_result(row: &RegistrationRow) -> DeviceRegistrationResult {
    DeviceRegistrationResult {
        registration_id: row.registration_id.clone(),
        created_date_time_utc: Some(timestamp(row.created_at)),
        assigned_hub: row.assigned_hub.clone(),
        device_id: row.device_id.clone(),
        status: row.status.into(),
        substatus: row.substatus.map(Into::into),
        last_updated_date_time_utc: Some(timestamp(row.updated_at)),
        etag: Some(row.etag.to_string()),
        error_code: row.error_code.and_then(|c| u32::try_from(c).ok()),
        error_message: row.error_message.clone(),
        // DPS returns the device's key blob again on assignment, and the Azure clients import
        // it (aziot-identityd, the Node.js SDK's `storingSecret` step).
        tpm: Some(TpmRegistrationResult {
            authentication_key: Base64Bytes(row.authentication_key.clone()),
        }),
        payload: row.payload.as_ref().map(|p| p.0.clone()),
        issued_certificate_chain: None,
        // The service API's alone (`http::service_api`).
        attestation: None,
    }
}
