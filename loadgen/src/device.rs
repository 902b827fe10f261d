//! One device's registration over HTTPS, as the device API expects it (docs/protocol.md §2):
//! challenge → activate and import in the software TPM → SAS register (→ poll while the
//! service answers `assigning`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dps_protocol::sas::{self, SoftwareKey};
use dps_protocol::wire::{
    Base64Bytes, DeviceRegistration, RegistrationOperationStatus, RegistrationStatus,
    TpmAttestation, TpmChallenge,
};
use dps_protocol::AuthenticationKey;
use reqwest::{Client, StatusCode};

use crate::fleet::SoftDevice;

/// The device API version sent (the Azure SDKs' GA version).
pub const API_VERSION: &str = "2019-03-31";

/// A leg of a registration, as timed and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Leg {
    Challenge,
    Register,
    Poll,
}

impl Leg {
    pub const ALL: [Leg; 3] = [Leg::Challenge, Leg::Register, Leg::Poll];

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Leg::Challenge => "challenge",
            Leg::Register => "register",
            Leg::Poll => "poll",
        }
    }
}

/// Why a registration did not complete, by kind (the report counts these).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum Failure {
    #[error("{} answered {status}", leg.name())]
    Status { leg: Leg, status: u16 },
    #[error("{}: no answer ({what})", leg.name())]
    Transport { leg: Leg, what: &'static str },
    #[error("{}: {what}", leg.name())]
    Protocol { leg: Leg, what: &'static str },
}

impl Failure {
    /// A 5xx answer: the service failed (what the load tests must never see).
    #[must_use]
    pub fn is_server_error(&self) -> bool {
        matches!(self, Failure::Status { status, .. } if *status >= 500)
    }

    /// A 503: the service could not reach its database and said to retry.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Failure::Status { status: 503, .. })
    }
}

/// What the service answered a device it assigned: enough to check afterwards that the
/// assignment holds (its registration, and its key admitting it to its hub).
#[derive(Clone, PartialEq, Eq)]
pub struct Assignment {
    pub registration_id: String,
    pub assigned_hub: String,
    pub device_id: String,
    /// The HMAC key the device imported (a load generator's, not a secret worth guarding).
    pub device_key: Vec<u8>,
}

impl std::fmt::Debug for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assignment")
            .field("registration_id", &self.registration_id)
            .field("assigned_hub", &self.assigned_hub)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// Where devices register.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port`, no trailing slash.
    pub base: String,
    pub id_scope: String,
}

fn transport(leg: Leg, err: &reqwest::Error) -> Failure {
    let what = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else if err.is_decode() {
        "body"
    } else {
        "io"
    };
    Failure::Transport { leg, what }
}

/// Sends `request` and reads its JSON body, timing the leg into `times`.
async fn call<T: serde::de::DeserializeOwned>(
    leg: Leg,
    request: reqwest::RequestBuilder,
    expect: StatusCode,
    times: &mut Vec<(Leg, Duration)>,
) -> Result<(T, Option<u64>), Failure> {
    let started = Instant::now();
    let response = request.send().await.map_err(|e| transport(leg, &e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let bytes = response.bytes().await.map_err(|e| transport(leg, &e))?;
    times.push((leg, started.elapsed()));
    // An operation's status comes as 200 once decided, 202 while assigning.
    let operation = matches!(leg, Leg::Register | Leg::Poll);
    if status != expect && !(operation && status == StatusCode::ACCEPTED) {
        return Err(Failure::Status {
            leg,
            status: status.as_u16(),
        });
    }
    let body = serde_json::from_slice(&bytes).map_err(|_| Failure::Protocol {
        leg,
        what: "unexpected body",
    })?;
    Ok((body, retry_after))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Turns the challenge's body into the SAS step's: the quote answering the attestation
/// challenge instead of the attestation key, and the CSR.
fn for_the_sas_step(
    body: &mut DeviceRegistration,
    device: &SoftDevice,
    challenge: &TpmChallenge,
) -> Result<(), &'static str> {
    if let (Some(ak), Some(attestation), Some(tpm)) =
        (&device.ak, &challenge.attestation, body.tpm.as_mut())
    {
        tpm.attestation_key = None;
        tpm.quote = Some(ak.answer(&device.tpm, attestation)?);
    }
    body.csr = device.csr.as_ref().map(|(csr, _)| Base64Bytes(csr.clone()));
    Ok(())
}

/// What an `assigned` status tells the device `id` holding `key`.
fn assignment(
    status: &RegistrationOperationStatus,
    id: &str,
    key: &[u8],
    leg: Leg,
) -> Result<Assignment, Failure> {
    let state = status.registration_state.as_ref();
    match (
        state.and_then(|s| s.assigned_hub.clone()),
        state.and_then(|s| s.device_id.clone()),
    ) {
        (Some(assigned_hub), Some(device_id)) => Ok(Assignment {
            registration_id: id.to_owned(),
            assigned_hub,
            device_id,
            device_key: key.to_vec(),
        }),
        _ => Err(Failure::Protocol {
            leg,
            what: "assigned without a hub and device id",
        }),
    }
}

/// Polls an operation until it is decided: at most this many times.
const MAX_POLLS: usize = 10;

/// Runs `device`'s registration against `target` with `client`, timing the legs into `times`;
/// the assignment once assigned (`None` with `challenge_only`, which stops after the challenge:
/// the service's RSA work alone).
pub async fn register(
    client: &Client,
    target: &Target,
    device: &SoftDevice,
    challenge_only: bool,
    times: &mut Vec<(Leg, Duration)>,
) -> Result<Option<Assignment>, Failure> {
    let id = &device.registration_id;
    let url = format!(
        "{}/{}/registrations/{id}/register?api-version={API_VERSION}",
        target.base, target.id_scope
    );
    let mut body = DeviceRegistration {
        registration_id: id.clone(),
        tpm: Some(TpmAttestation {
            attestation_key: device.ak.as_ref().map(|ak| Base64Bytes(ak.public.clone())),
            ..TpmAttestation::keys(device.ek.clone(), device.srk.clone())
        }),
        csr: None,
        payload: None,
    };
    let (challenge, _): (TpmChallenge, _) = call(
        Leg::Challenge,
        client.put(&url).json(&body),
        StatusCode::UNAUTHORIZED,
        times,
    )
    .await?;
    if challenge_only {
        return Ok(None);
    }
    let unusable = |what| Failure::Protocol {
        leg: Leg::Challenge,
        what,
    };
    let blob = AuthenticationKey::from_bytes(&challenge.authentication_key.0)
        .map_err(|_| unusable("the authenticationKey does not parse"))?;
    let key = device
        .tpm
        .import_authentication_key(&blob)
        .map_err(|_| unusable("the software TPM refused the authenticationKey"))?;
    let resource = sas::registration_resource(&target.id_scope, id);
    let sign = |expiry| {
        sas::build_token(
            &resource,
            expiry,
            Some(sas::REGISTRATION_KEY_NAME),
            &mut SoftwareKey(&key),
        )
        .unwrap_or_else(|never| match never {})
    };
    for_the_sas_step(&mut body, device, &challenge).map_err(unusable)?;
    let token = sign(unix_now() + 300);
    let (mut status, mut retry_after): (RegistrationOperationStatus, _) = call(
        Leg::Register,
        client
            .put(&url)
            .header(reqwest::header::AUTHORIZATION, &token)
            .json(&body),
        StatusCode::OK,
        times,
    )
    .await?;
    let poll_url = format!(
        "{}/{}/registrations/{id}/operations/{}?api-version={API_VERSION}",
        target.base, target.id_scope, status.operation_id
    );
    let mut leg = Leg::Register;
    for polls in 0.. {
        match status.status {
            RegistrationStatus::Assigned => return assignment(&status, id, &key, leg).map(Some),
            RegistrationStatus::Assigning | RegistrationStatus::Unassigned => {}
            RegistrationStatus::Failed | RegistrationStatus::Disabled => {
                return Err(Failure::Protocol {
                    leg,
                    what: "the registration failed",
                })
            }
        }
        if polls == MAX_POLLS {
            break;
        }
        // The first poll goes at once (as aziot-identityd's does): a service that answers the
        // register call with `assigning` but decides at once costs one request more, not a
        // second of waiting.
        if polls > 0 {
            tokio::time::sleep(Duration::from_secs(retry_after.unwrap_or(1))).await;
        }
        leg = Leg::Poll;
        (status, retry_after) = call(
            Leg::Poll,
            client
                .get(&poll_url)
                .header(reqwest::header::AUTHORIZATION, &token),
            StatusCode::OK,
            times,
        )
        .await?;
    }
    Err(Failure::Protocol {
        leg: Leg::Poll,
        what: "never assigned",
    })
}

/// Enrolls `devices` through the enrollment API's bulk operation (with an attestation policy
/// that requires a quote, for devices that have an attestation key, and the credential policy
/// of devices that send a CSR) (`mode: update`, so a re-run
/// changes nothing), authenticated with an access policy's service SAS.
pub async fn enroll(
    client: &Client,
    base: &str,
    service_host_name: &str,
    policy: (&str, &[u8]),
    devices: &[SoftDevice],
) -> anyhow::Result<()> {
    /// Enrollments per bulk call: ~500 bytes each stays under the default body limit (96 KiB).
    const CHUNK: usize = 150;
    let token = sas::build_token(
        service_host_name,
        unix_now() + 3600,
        Some(policy.0),
        &mut SoftwareKey(policy.1),
    )
    .unwrap_or_else(|never| match never {});
    for chunk in devices.chunks(CHUNK) {
        let enrollments: Vec<_> = chunk
            .iter()
            .map(|d| {
                let mut enrollment = serde_json::json!({
                    "registrationId": d.registration_id,
                    "attestation": {"type": "tpm", "tpm": {"endorsementKey": Base64Bytes(d.ek.clone())}},
                    "provisioningStatus": "enabled",
                });
                // An attesting fleet is held to a quote of SHA-256 PCRs 0–7.
                if d.ak.is_some() {
                    enrollment["attestationPolicy"] = serde_json::json!({"mode": "require"});
                }
                if let Some((_, policy)) = &d.csr {
                    enrollment["credentialPolicyName"] = serde_json::json!(policy);
                }
                enrollment
            })
            .collect();
        let response = client
            .post(format!("{base}/enrollments?api-version=2021-10-01"))
            .header(reqwest::header::AUTHORIZATION, &token)
            .json(&serde_json::json!({"mode": "update", "enrollments": enrollments}))
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success() && body["isSuccessful"] != false,
            "bulk enrollment answered {status}: {body}"
        );
    }
    Ok(())
}
