//! The decision logic of each device step (protocol.md §1–3). Handlers parse HTTP; this module
//! decides, calling `dps-protocol` for the crypto and `store` for the state. Each step is one
//! transaction or one statement; the RSA work of a challenge holds no lock.

use dps_protocol::sas::{self, SasToken, VerifyPolicy, REGISTRATION_KEY_NAME};
use dps_protocol::tpm::Public;
use dps_protocol::wire::{
    Base64Bytes, DeviceRegistration, DeviceRegistrationResult, RegistrationOperationStatus,
    RegistrationStatus, RegistrationSubstatus, TpmRegistrationResult,
};
use dps_protocol::{AuthenticationKey, RegistrationId};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::allocation::assign_hub;
use crate::app::App;
use crate::http::error::{timestamp, ApiError};
use crate::store::registrations::{self, ChallengeRow, RegistrationRow};
use crate::store::{enrollments, throttle};

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

/// Parses a registration id from a path, as a 400 if it breaks the DPS rules.
pub fn parse_registration_id(id: &str) -> Result<RegistrationId, ApiError> {
    RegistrationId::parse(id).map_err(|e| ApiError::ArgumentInvalid(format!("registrationId: {e}")))
}

/// Validates a register body against the path's registration id.
pub fn parse_request(path_id: &str, body: DeviceRegistration) -> Result<RegisterRequest, ApiError> {
    let registration_id = parse_registration_id(path_id)?;
    if body.registration_id != registration_id.as_str() {
        return Err(ApiError::ArgumentInvalid(
            "registrationId in the body does not match the path".to_owned(),
        ));
    }
    let Some(tpm) = body.tpm else {
        return Ok(RegisterRequest {
            registration_id,
            tpm: None,
        });
    };
    let (ek_bytes, srk_bytes) = (tpm.endorsement_key.0, tpm.storage_root_key.0);
    let ek = Public::from_tpm2b(&ek_bytes)
        .map_err(|e| ApiError::ArgumentInvalid(format!("endorsementKey: {e}")))?;
    let srk = Public::from_tpm2b(&srk_bytes)
        .map_err(|e| ApiError::ArgumentInvalid(format!("storageRootKey: {e}")))?;
    ek.storage_key("EK")
        .map_err(|e| ApiError::ArgumentInvalid(format!("endorsementKey: {e}")))?;
    srk.storage_key("SRK")
        .map_err(|e| ApiError::ArgumentInvalid(format!("storageRootKey: {e}")))?;
    Ok(RegisterRequest {
        registration_id,
        tpm: Some(TpmKeys {
            ek_bytes,
            srk_bytes,
            ek,
            srk,
        }),
    })
}

fn unix(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp()).unwrap_or(0)
}

async fn throttled(
    app: &App,
    bucket: &str,
    limit: crate::app::Limit,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    match throttle::hit(app.pool(), bucket, limit, now).await? {
        Some(retry_after) => Err(ApiError::Throttled { retry_after }),
        None => Ok(()),
    }
}

/// Step 1, no SAS: issue a fresh HMAC key wrapped for this one TPM; returns the blob.
pub async fn challenge(
    app: &App,
    req: &RegisterRequest,
    now: OffsetDateTime,
) -> Result<Vec<u8>, ApiError> {
    let id = req.registration_id.as_str();
    let tpm = req
        .tpm
        .as_ref()
        .ok_or_else(|| ApiError::ArgumentInvalid("tpm attestation is required".to_owned()))?;
    let enrollment = enrollments::get(app.pool(), id)
        .await?
        .ok_or(ApiError::Unauthorized(
            "no enrollment for this registration id",
        ))?;
    let ek_hash = ek_hash(&tpm.ek_bytes);
    if enrollment.ek_hash != ek_hash {
        return Err(ApiError::Unauthorized(
            "endorsement key does not match the enrollment",
        ));
    }
    if enrollment.provisioning_status != "enabled" {
        return Err(ApiError::Unauthorized("enrollment is disabled"));
    }
    let limit = app.settings().registration_limit;
    throttled(app, &format!("register:{id}"), limit, now).await?;
    throttled(app, &format!("ek:{}", hex::encode(&ek_hash)), limit, now).await?;

    let issued = AuthenticationKey::issue(&tpm.ek, &tpm.srk, &mut rand::rngs::OsRng)
        .map_err(|e| ApiError::ArgumentInvalid(format!("tpm: {e}")))?;
    // At most a week, so no configured value can overflow the timestamp.
    let blob = issued.blob.to_bytes();
    let ttl = i64::try_from(app.settings().challenge_ttl_secs.min(7 * 86_400)).unwrap_or(0);
    registrations::put_challenge(
        app.pool(),
        &ChallengeRow {
            registration_id: id.to_owned(),
            ek_hash,
            storage_root_key: tpm.srk_bytes.clone(),
            sealed_key: app.sealer().seal(issued.hmac_key.as_ref(), id.as_bytes()),
            key_id: app.sealer().key_id().to_owned(),
            authentication_key: blob.clone(),
            issued_at: now,
            expires_at: now + time::Duration::seconds(ttl),
        },
    )
    .await?;
    Ok(blob)
}

/// Parses a device's `Authorization` header.
pub fn parse_sas(header: &str) -> Result<SasToken, ApiError> {
    SasToken::parse(header).map_err(|_| ApiError::Unauthorized("malformed SAS token"))
}

/// Checks `token` with a sealed key.
fn verify(
    app: &App,
    token: &SasToken,
    id: &str,
    sealed: &[u8],
    key_id: &str,
    now: OffsetDateTime,
) -> Result<(), ApiError> {
    let key = app
        .sealer()
        .open(sealed, key_id, id.as_bytes())
        .map_err(ApiError::internal)?;
    let settings = app.settings();
    let resource = sas::registration_resource(&settings.id_scope, id);
    let policy = VerifyPolicy {
        resource: &resource,
        key_name: Some(REGISTRATION_KEY_NAME),
        now: unix(now),
        max_skew: settings.clock_skew_secs,
        max_lifetime: settings.sas_max_lifetime_secs,
    };
    token.verify(&key, &policy).map_err(|e| {
        tracing::debug!(error = %e, "SAS refused");
        ApiError::Unauthorized("SAS token does not verify")
    })
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

/// Finds the key `token` was signed with: the newest challenge's key if it is live, else the key
/// the device last registered with; older keys no longer exist anywhere. If the body named a
/// TPM (`presented`: EK hash and SRK), the key must have been issued to that TPM.
fn proven_key(
    app: &App,
    token: &SasToken,
    id: &str,
    challenge: Option<ChallengeRow>,
    previous: Option<&RegistrationRow>,
    presented: Option<&(Vec<u8>, &[u8])>,
    now: OffsetDateTime,
) -> Result<ProvenKey, ApiError> {
    let issued_here =
        |ek: &[u8], srk: &[u8]| presented.is_none_or(|(e, s)| ek == e.as_slice() && srk == *s);
    let candidates = [
        challenge
            .filter(|c| c.expires_at > now && issued_here(&c.ek_hash, &c.storage_root_key))
            .map(|c| ProvenKey {
                sealed_key: c.sealed_key,
                key_id: c.key_id,
                ek_hash: c.ek_hash,
                storage_root_key: c.storage_root_key,
                authentication_key: c.authentication_key,
                from_challenge: true,
            }),
        previous
            .filter(|p| issued_here(&p.ek_hash, &p.storage_root_key))
            .map(|p| ProvenKey {
                sealed_key: p.sealed_key.clone(),
                key_id: p.key_id.clone(),
                ek_hash: p.ek_hash.clone(),
                storage_root_key: p.storage_root_key.clone(),
                authentication_key: p.authentication_key.clone(),
                from_challenge: false,
            }),
    ];
    for candidate in candidates.into_iter().flatten() {
        match verify(
            app,
            token,
            id,
            &candidate.sealed_key,
            &candidate.key_id,
            now,
        ) {
            Ok(()) => return Ok(candidate),
            Err(ApiError::Unauthorized(_)) => {}
            Err(other) => return Err(other),
        }
    }
    Err(ApiError::Unauthorized(
        "SAS token does not verify with a live key",
    ))
}

/// Step 2, with SAS: the device proved it holds the issued key; assign it. One transaction.
pub async fn register(
    app: &App,
    req: &RegisterRequest,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<RegistrationOperationStatus, ApiError> {
    let id = req.registration_id.as_str();
    let presented = req
        .tpm
        .as_ref()
        .map(|t| (ek_hash(&t.ek_bytes), t.srk_bytes.as_slice()));
    let mut tx = app.pool().begin().await.map_err(ApiError::internal)?;
    let (challenge, previous) = registrations::lock(&mut tx, id).await?;

    let ProvenKey {
        sealed_key,
        key_id,
        ek_hash,
        storage_root_key,
        authentication_key,
        from_challenge,
    } = proven_key(
        app,
        token,
        id,
        challenge,
        previous.as_ref(),
        presented.as_ref(),
        now,
    )?;

    let enrollment = enrollments::get(app.pool(), id)
        .await?
        .ok_or(ApiError::Unauthorized(
            "no enrollment for this registration id",
        ))?;
    if enrollment.ek_hash != ek_hash {
        return Err(ApiError::Unauthorized(
            "endorsement key does not match the enrollment",
        ));
    }
    if enrollment.provisioning_status != "enabled" {
        return Err(ApiError::Unauthorized("enrollment is disabled"));
    }
    let hub = assign_hub(
        id,
        enrollment.iot_hub_host_name.as_deref(),
        &app.settings().iot_hubs,
    )
    .ok_or_else(|| ApiError::internal(std::io::Error::other("no IoT hub is linked")))?
    .to_owned();
    let substatus = match &previous {
        Some(p) if p.assigned_hub.as_deref() != Some(hub.as_str()) => "deviceDataMigrated",
        _ => "initialAssignment",
    };
    let row = RegistrationRow {
        registration_id: id.to_owned(),
        operation_id: Uuid::new_v4(),
        status: "assigned".to_owned(),
        substatus: Some(substatus.to_owned()),
        assigned_hub: Some(hub),
        device_id: Some(enrollment.device_id.unwrap_or_else(|| id.to_owned())),
        ek_hash,
        storage_root_key,
        sealed_key,
        key_id,
        authentication_key,
        error_code: None,
        error_message: None,
        etag: Uuid::new_v4(),
        created_at: now,
        updated_at: now,
    };
    let row = registrations::put_registration(&mut tx, &row).await?;
    if from_challenge {
        registrations::delete_challenge(&mut tx, id).await?;
    }
    tx.commit().await.map_err(ApiError::internal)?;
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

/// The registration state of a device that authenticates with the key it registered with.
async fn authenticated_state(
    app: &App,
    id: &RegistrationId,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<RegistrationRow, ApiError> {
    let id = id.as_str();
    let row = registrations::get_registration(app.pool(), id)
        .await?
        .ok_or(ApiError::Unauthorized("device has not registered"))?;
    verify(app, token, id, &row.sealed_key, &row.key_id, now)?;
    throttled(app, &format!("poll:{id}"), app.settings().poll_limit, now).await?;
    Ok(row)
}

/// `GET .../operations/{operationId}`.
pub async fn operation_status(
    app: &App,
    id: &RegistrationId,
    operation_id: &str,
    token: &SasToken,
    now: OffsetDateTime,
) -> Result<RegistrationOperationStatus, ApiError> {
    let row = authenticated_state(app, id, token, now).await?;
    if row.operation_id.to_string() != operation_id.to_ascii_lowercase() {
        return Err(ApiError::NotFound("operation"));
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
) -> Result<DeviceRegistrationResult, ApiError> {
    Ok(registration_result(
        &authenticated_state(app, id, token, now).await?,
    ))
}

/// A registration row as the wire's `registrationState`.
#[must_use]
pub fn registration_result(row: &RegistrationRow) -> DeviceRegistrationResult {
    let status = match row.status.as_str() {
        "assigned" => RegistrationStatus::Assigned,
        "assigning" => RegistrationStatus::Assigning,
        "failed" => RegistrationStatus::Failed,
        "disabled" => RegistrationStatus::Disabled,
        _ => RegistrationStatus::Unassigned,
    };
    let substatus = row.substatus.as_deref().and_then(|s| match s {
        "initialAssignment" => Some(RegistrationSubstatus::InitialAssignment),
        "deviceDataMigrated" => Some(RegistrationSubstatus::DeviceDataMigrated),
        "deviceDataReset" => Some(RegistrationSubstatus::DeviceDataReset),
        "reprovisionedToInitialAssignment" => {
            Some(RegistrationSubstatus::ReprovisionedToInitialAssignment)
        }
        _ => None,
    });
    DeviceRegistrationResult {
        registration_id: row.registration_id.clone(),
        created_date_time_utc: Some(timestamp(row.created_at)),
        assigned_hub: row.assigned_hub.clone(),
        device_id: row.device_id.clone(),
        status,
        substatus,
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
