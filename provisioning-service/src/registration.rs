//! The decision logic of each device step (docs/protocol.md §1–3). Handlers parse HTTP; this module
//! decides, calling `dps-protocol` for the crypto and `store` for the state, and names every
//! refusal ([`Refusal`]). Each step runs in one transaction on one connection; the RSA work of
//! a challenge holds only the asking address's throttle row.

mod admission;
mod refusal;

pub use admission::admit;
pub use refusal::{Refusal, StepError};

use dps_protocol::sas::{self, SasToken, VerifyPolicy, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::Public;
use dps_protocol::wire::{
    Base64Bytes, DeviceRegistration, DeviceRegistrationResult, RegistrationOperationStatus,
    RegistrationStatus, RegistrationSubstatus, TpmRegistrationResult,
};
use dps_protocol::{AuthenticationKey, RegistrationId};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::app::App;
use crate::settings::Limit;
use crate::store::registrations::{self, ChallengeRow, RegistrationRow, Status, Substatus};
use crate::store::throttle;
use crate::timestamp;

/// A parsed, validated register request body.
#[derive(Debug)]
pub struct RegisterRequest {
    pub registration_id: RegistrationId,
    /// Required for the challenge; optional with a SAS (aziot-identityd sends only the
    /// registration id then), and checked against the key's TPM when present.
    pub tpm: Option<TpmKeys>,
}

/// The EK and SRK a device presents, as sent and parsed.
#[derive(Debug)]
pub struct TpmKeys {
    pub ek_bytes: Vec<u8>,
    pub srk_bytes: Vec<u8>,
    pub ek: Public,
    pub srk: Public,
}

/// SHA-256 of an EK's `TPM2B_PUBLIC`: how enrollments and throttles know an EK.
#[must_use]
pub fn ek_hash(ek_tpm2b: &[u8]) -> Vec<u8> {
    Sha256::digest(ek_tpm2b).to_vec()
}

/// Parses a registration id as DPS allows it.
pub fn parse_registration_id(id: &str) -> Result<RegistrationId, Refusal> {
    RegistrationId::parse(id).map_err(Refusal::InvalidRegistrationId)
}

/// Parses an EK or SRK and checks it is a key this service can seal to.
fn parse_storage_key(
    field: &'static str,
    role: &'static str,
    bytes: &[u8],
) -> Result<Public, Refusal> {
    let key = Public::from_tpm2b(bytes).map_err(|e| Refusal::InvalidKey {
        field,
        source: e.into(),
    })?;
    key.storage_key(role)
        .map_err(|source| Refusal::InvalidKey { field, source })?;
    Ok(key)
}

/// Validates a register body against the path's registration id.
pub fn parse_request(path_id: &str, body: DeviceRegistration) -> Result<RegisterRequest, Refusal> {
    let registration_id = parse_registration_id(path_id)?;
    if body.registration_id != registration_id.as_str() {
        return Err(Refusal::RegistrationIdMismatch);
    }
    let tpm = match body.tpm {
        None => None,
        Some(tpm) => {
            let (ek_bytes, srk_bytes) = (tpm.endorsement_key.0, tpm.storage_root_key.0);
            Some(TpmKeys {
                ek: parse_storage_key("endorsementKey", "EK", &ek_bytes)?,
                srk: parse_storage_key("storageRootKey", "SRK", &srk_bytes)?,
                ek_bytes,
                srk_bytes,
            })
        }
    };
    Ok(RegisterRequest {
        registration_id,
        tpm,
    })
}

/// Parses a device's `Authorization` header.
pub fn parse_sas(header: &str) -> Result<SasToken, Refusal> {
    SasToken::parse(header).map_err(Refusal::MalformedSas)
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

/// Counts one request against `bucket`; refuses it over the limit.
async fn throttle(
    conn: &mut PgConnection,
    bucket: &str,
    limit: Limit,
    now: OffsetDateTime,
) -> Result<(), StepError> {
    match throttle::hit(conn, bucket, limit, now).await? {
        Some(retry_after) => Err(Refusal::Throttled { retry_after }.into()),
        None => Ok(()),
    }
}

/// Step 1, no SAS: issue a fresh HMAC key wrapped for this one TPM; returns the blob. One
/// transaction: admission, the client address's throttle counter, the RSA work, the challenge
/// row.
///
/// Anyone who knows a device's registration id and EK_pub can ask for challenges in its name
/// (they are useless without the TPM). So the budget is the asking client address's, never the
/// device's, and a new challenge joins the device's live ones instead of replacing them: a
/// stranger's flood from elsewhere neither throttles the device nor evicts the challenge it is
/// answering (`store::registrations::put_challenge`).
pub async fn challenge(
    app: &App,
    req: &RegisterRequest,
    client_address: &str,
    now: OffsetDateTime,
    rng: &mut (impl CryptoRngCore + Send),
) -> Result<Vec<u8>, StepError> {
    let id = req.registration_id.as_str();
    let tpm = req.tpm.as_ref().ok_or(Refusal::AttestationRequired)?;
    let ek_hash = ek_hash(&tpm.ek_bytes);
    let mut tx = app.pool().begin().await?;
    admit(&mut tx, id, &ek_hash).await?;
    let limit = app.settings().registration_limit;
    throttle(&mut tx, &format!("challenge:{client_address}"), limit, now).await?;

    let issued =
        AuthenticationKey::issue(&tpm.ek, &tpm.srk, rng).map_err(|source| Refusal::InvalidKey {
            field: "tpm",
            source,
        })?;
    let blob = issued.blob.to_bytes();
    let row = ChallengeRow {
        challenge_id: Uuid::new_v4(),
        registration_id: id.to_owned(),
        client_address: client_address.to_owned(),
        ek_hash,
        storage_root_key: tpm.srk_bytes.clone(),
        sealed_key: app
            .sealer()
            .seal(issued.device_key.as_ref(), id.as_bytes(), rng),
        key_id: app.sealer().key_id().to_owned(),
        authentication_key: blob.clone(),
        issued_at: now,
        expires_at: now + app.settings().challenge_ttl(),
    };
    registrations::put_challenge(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(blob)
}

/// Checks `token` with a sealed key.
fn verify(
    app: &App,
    token: &SasToken,
    id: &str,
    sealed: &[u8],
    key_id: &str,
    now: OffsetDateTime,
) -> Result<(), StepError> {
    let key = app.sealer().open(sealed, key_id, id.as_bytes())?;
    let settings = app.settings();
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

/// The key a SAS token was verified with, and the TPM it was issued to.
struct ProvenKey {
    sealed_key: Vec<u8>,
    key_id: String,
    ek_hash: Vec<u8>,
    storage_root_key: Vec<u8>,
    authentication_key: Vec<u8>,
    /// Whether it is the live challenge's key (rather than the registration's).
    from_challenge: bool,
}

impl From<ChallengeRow> for ProvenKey {
    fn from(c: ChallengeRow) -> Self {
        Self {
            sealed_key: c.sealed_key,
            key_id: c.key_id,
            ek_hash: c.ek_hash,
            storage_root_key: c.storage_root_key,
            authentication_key: c.authentication_key,
            from_challenge: true,
        }
    }
}

impl From<&RegistrationRow> for ProvenKey {
    fn from(r: &RegistrationRow) -> Self {
        Self {
            sealed_key: r.sealed_key.clone(),
            key_id: r.key_id.clone(),
            ek_hash: r.ek_hash.clone(),
            storage_root_key: r.storage_root_key.clone(),
            authentication_key: r.authentication_key.clone(),
            from_challenge: false,
        }
    }
}

/// Finds the key `token` was signed with: a live challenge's key (newest first), else the key
/// the device last registered with; older keys no longer exist anywhere. If the body named a
/// TPM (`presented`: EK hash and SRK), the key must have been issued to that TPM.
fn proven_key(
    app: &App,
    token: &SasToken,
    id: &str,
    challenges: Vec<ChallengeRow>,
    previous: Option<&RegistrationRow>,
    presented: Option<&(Vec<u8>, &[u8])>,
    now: OffsetDateTime,
) -> Result<ProvenKey, StepError> {
    let issued_here = |k: &ProvenKey| {
        presented.is_none_or(|(ek, srk)| k.ek_hash == *ek && k.storage_root_key == *srk)
    };
    let candidates = challenges
        .into_iter()
        .filter(|c| c.expires_at > now)
        .map(ProvenKey::from)
        .chain(previous.map(ProvenKey::from));
    let mut refusal = Refusal::NoLiveKey;
    for candidate in candidates.filter(issued_here) {
        match verify(
            app,
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

/// Step 2, with SAS: the device proved it holds the issued key; assign it. One transaction:
/// the device's challenge and registration rows locked, the enrollment read, the state written.
pub async fn register(
    app: &App,
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
    let mut tx = app.pool().begin().await?;
    let (challenges, previous) = registrations::lock(&mut tx, id).await?;
    let key = proven_key(
        app,
        token,
        id,
        challenges,
        previous.as_ref(),
        presented.as_ref(),
        now,
    )?;
    let enrollment = admit(&mut tx, id, &key.ek_hash).await?;
    // A key sealed under a previous service key moves to the current one (sealing.rs).
    let (sealed_key, key_id) =
        app.sealer()
            .reseal(key.sealed_key, key.key_id, id.as_bytes(), rng)?;

    let hub = app
        .settings()
        .linked_hubs
        .assign(id, enrollment.iot_hub_host_name.as_deref())
        .to_owned();
    let substatus = match &previous {
        Some(p) if p.assigned_hub.as_deref() != Some(hub.as_str()) => Substatus::DeviceDataMigrated,
        _ => Substatus::InitialAssignment,
    };
    let row = RegistrationRow {
        registration_id: id.to_owned(),
        operation_id: Uuid::new_v4(),
        status: Status::Assigned,
        substatus: Some(substatus),
        assigned_hub: Some(hub),
        device_id: Some(
            enrollment
                .device_id
                .clone()
                .unwrap_or_else(|| id.to_owned()),
        ),
        ek_hash: key.ek_hash,
        storage_root_key: key.storage_root_key,
        sealed_key,
        key_id,
        authentication_key: key.authentication_key,
        error_code: None,
        error_message: None,
        etag: Uuid::new_v4(),
        created_at: now,
        updated_at: now,
    };
    let row = registrations::put_registration(&mut tx, &row).await?;
    if key.from_challenge {
        registrations::delete_challenges(&mut tx, id).await?;
    }
    tx.commit().await?;
    tracing::info!(
        registration_id = id,
        hub = row.assigned_hub.as_deref(),
        "device assigned"
    );
    Ok(RegistrationOperationStatus {
        operation_id: row.operation_id.to_string(),
        status: RegistrationStatus::Assigning,
        registration_state: None,
    })
}

/// The registration state of a device that authenticates with the key it registered with. One
/// connection: the state read, then the poll counter.
async fn authenticated_state(
    app: &App,
    id: &RegistrationId,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<RegistrationRow, StepError> {
    let id = id.as_str();
    let mut conn = app.pool().acquire().await?;
    let row = registrations::get_registration(&mut conn, id)
        .await?
        .ok_or(Refusal::NoLiveKey)?;
    verify(app, token, id, &row.sealed_key, &row.key_id, now)?;
    throttle(
        &mut conn,
        &format!("poll:{id}"),
        app.settings().poll_limit,
        now,
    )
    .await?;
    Ok(row)
}

/// `GET .../operations/{operationId}`.
pub async fn operation_status(
    app: &App,
    id: &RegistrationId,
    operation_id: &str,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<RegistrationOperationStatus, StepError> {
    let row = authenticated_state(app, id, token, now).await?;
    if row.operation_id.to_string() != operation_id.to_ascii_lowercase() {
        return Err(Refusal::UnknownOperation.into());
    }
    let state = registration_result(&row);
    Ok(RegistrationOperationStatus {
        operation_id: row.operation_id.to_string(),
        status: state.status,
        registration_state: Some(state),
    })
}

/// `POST /{idScope}/registrations/{registrationId}`.
pub async fn device_state(
    app: &App,
    id: &RegistrationId,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<DeviceRegistrationResult, StepError> {
    Ok(registration_result(
        &authenticated_state(app, id, token, now).await?,
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
        payload: None,
    }
}
