//! First-boot provisioning as an explicit state machine, persisted after every step so a device
//! that reboots or is killed anywhere finishes (or cleanly restarts) on its next run:
//!
//! ```text
//! Unprovisioned ──challenge, import──► KeyImported ──SAS register──► Assigning(op) ──poll──► Assigned
//!                (and quote, if asked)   (with the quote)
//!       ▲                                   │                              │
//!       └──── key refused or operation unknown: start over (once) ◄────────┘
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dps_protocol::crypto::sha256;
use dps_protocol::sas::{self, REGISTRATION_KEY_NAME};
use dps_protocol::wire::{
    AttestationChallenge, Base64Bytes, KeyCertification, Quote, RegistrationStatus,
};
use dps_protocol::RegistrationId;
use serde::{Deserialize, Serialize};

use crate::dps::{Answers, ClientError, DpsClient, EkCertificateBundle, Polled, Presented};
use crate::tpm::{AkAlgorithm, Tpm, TpmError};

/// Where a device is in provisioning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    Unprovisioned,
    /// The issued key is in the TPM; the service has not seen it used yet. With the quote
    /// answering the challenge's attestation, when the service asked for one, and the
    /// certification of the certificate key, when the device asks for a certificate.
    KeyImported {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quote: Option<Quote>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        certify: Option<KeyCertification>,
    },
    /// Registered; the service is assigning.
    Assigning {
        operation_id: String,
    },
    Assigned {
        assigned_hub: String,
        device_id: String,
        /// What the service's allocation returned for the device (`registrationState.payload`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<serde_json::Value>,
    },
}

/// The state file: the stage, for which registration at which service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub registration_id: String,
    pub endpoint: String,
    pub id_scope: String,
    #[serde(flatten)]
    pub stage: Stage,
    pub updated_unix: u64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    #[error("TPM error")]
    Tpm(#[from] TpmError),
    #[error(transparent)]
    Dps(#[from] ClientError),
    #[error("cannot write the state file {path}")]
    StateFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the registration id is invalid")]
    RegistrationId(#[from] dps_protocol::RegistrationIdError),
    #[error("the provisioning service reports the registration as {status} (errorCode {error_code}): {message}")]
    Failed {
        status: String,
        error_code: u32,
        message: String,
    },
    #[error("not assigned within {0:?}")]
    Deadline(Duration),
}

/// How to provision.
#[derive(Debug, Clone)]
pub struct Options {
    /// Use this registration id instead of the one derived from the EK.
    pub registration_id: Option<String>,
    pub state_file: PathBuf,
    /// Provision again even if the state file says assigned.
    pub force: bool,
    /// Lifetime of each SAS token, seconds.
    pub sas_ttl: u64,
    /// Give up after this long.
    pub deadline: Duration,
    /// Longest wait between polls or retries.
    pub max_backoff: Duration,
    /// Sent as the register body's `payload` (the service hands it to a custom allocation
    /// webhook).
    pub payload: Option<serde_json::Value>,
    /// Which EK certificate the first register call carries.
    pub ek_certificate: EkCertificateSource,
    /// Show the attestation key and answer the service's attestation challenge.
    pub attest: bool,
    /// The attestation key's algorithm when it is made (`None`: the TPM's best default).
    pub attestation_key: Option<AkAlgorithm>,
    /// Ask for a certificate for a key made in the TPM (`csr`), proven to live there; the chain
    /// is written to [`chain_file`].
    pub certificate: bool,
}

/// Where the issued certificate chain is kept (PEM, leaf first): `certificate.pem` beside the
/// state file.
#[must_use]
pub fn chain_file(state_file: &Path) -> PathBuf {
    state_file.with_file_name("certificate.pem")
}

/// Where the EK certificate sent with the challenge request comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EkCertificateSource {
    /// The TPM's NV index, if it holds one.
    #[default]
    Tpm,
    /// This one (from a file).
    Given(EkCertificateBundle),
    /// None.
    Omit,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub registration_id: String,
    pub assigned_hub: String,
    pub device_id: String,
    /// What the service's allocation returned for the device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// True when the state file already said assigned and nothing was sent.
    pub already_provisioned: bool,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads the state file; a missing or unreadable one means nothing was done yet.
#[must_use]
pub fn load_state(path: &Path) -> Option<State> {
    let text = std::fs::read(path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable state file");
            None
        }
    }
}

/// Writes the state file atomically (temporary file, fsync, rename).
fn save_state(path: &Path, state: &State) -> Result<(), ProvisionError> {
    let err = |source| ProvisionError::StateFile {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn wait(&mut self, hint: Option<Duration>, deadline: Instant) {
        let delay = hint.unwrap_or(self.next).min(self.max);
        self.next = (self.next * 2).min(self.max);
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(delay.min(left));
    }
}

/// What the device sends with every call.
struct Device {
    registration_id: String,
    ek: Vec<u8>,
    srk: Vec<u8>,
    /// The SAS resource, `{idScope}/registrations/{registrationId}`.
    resource: String,
    payload: Option<serde_json::Value>,
    ek_certificate: Option<EkCertificateBundle>,
    /// The attestation key's `TPM2B_PUBLIC`, unless the device does not attest.
    attestation_key: Option<Vec<u8>>,
    /// The CSR for the TPM's certificate key, when the device asks for a certificate.
    csr: Option<Vec<u8>>,
    /// Where the chain issued for it goes.
    chain_file: PathBuf,
}

impl Device {
    fn presented(&self) -> Presented<'_> {
        Presented {
            registration_id: &self.registration_id,
            ek: &self.ek,
            srk: &self.srk,
            payload: self.payload.as_ref(),
            certificate: self.ek_certificate.as_ref(),
            attestation_key: self.attestation_key.as_deref(),
        }
    }
}

/// Where to start: the saved stage if it is for this registration and the key it needs is
/// still in the TPM; otherwise from the beginning.
fn resume(tpm: &mut Tpm, options: &Options, fresh: State) -> Result<State, ProvisionError> {
    let mut state = fresh;
    if let Some(saved) = load_state(&options.state_file) {
        let same = saved.registration_id == state.registration_id
            // Older state files kept the endpoint as typed, perhaps with a trailing slash.
            && saved.endpoint.trim_end_matches('/') == state.endpoint
            && saved.id_scope == state.id_scope;
        if same && !options.force {
            state.stage = saved.stage;
        }
    }
    if options.certificate && matches!(state.stage, Stage::Assigned { .. }) {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        if let Some(reason) =
            crate::certificate::renewal_reason(&chain_file(&options.state_file), now)
        {
            tracing::info!(%reason, "renewing the certificate: registering again");
            state.stage = Stage::Unprovisioned;
        }
    }
    if state.stage != Stage::Unprovisioned && !tpm.has_device_key()? {
        tracing::warn!("the state file is ahead of the TPM (no key persisted); starting over");
        state.stage = Stage::Unprovisioned;
    }
    Ok(state)
}

fn assigned(state: &State, already_provisioned: bool) -> Option<Outcome> {
    match &state.stage {
        Stage::Assigned {
            assigned_hub,
            device_id,
            payload,
        } => Some(Outcome {
            registration_id: state.registration_id.clone(),
            assigned_hub: assigned_hub.clone(),
            device_id: device_id.clone(),
            payload: payload.clone(),
            already_provisioned,
        }),
        _ => None,
    }
}

/// One step from `stage`: the next stage, and how long the service asked to wait.
fn step(
    tpm: &mut Tpm,
    dps: &DpsClient,
    device: &Device,
    stage: &Stage,
    sas_ttl: u64,
    imported: &mut Option<[u8; 32]>,
) -> Result<(Stage, Option<Duration>), ProvisionError> {
    let id = device.registration_id.as_str();
    let sign = |tpm: &mut Tpm| {
        let expiry = unix_now() + sas_ttl;
        sas::build_token(&device.resource, expiry, Some(REGISTRATION_KEY_NAME), tpm)
    };
    let polled = match stage {
        Stage::Unprovisioned => {
            let challenge = dps.challenge(&device.presented())?;
            let blob = &challenge.authentication_key.0;
            tpm.import_authentication_key(blob)?;
            *imported = Some(sha256(&[blob]));
            tracing::info!("authentication key imported into the TPM");
            let (quote, certify) = match &challenge.attestation {
                Some(attestation) => answer(tpm, attestation, device.csr.is_some())?,
                None => (None, None),
            };
            return Ok((Stage::KeyImported { quote, certify }, None));
        }
        Stage::KeyImported { quote, certify } => {
            let token = sign(tpm)?;
            let answers = Answers {
                quote: quote.as_ref(),
                certify: certify.as_ref(),
                csr: device.csr.as_deref(),
            };
            dps.register(&device.presented(), &answers, &token)?
        }
        Stage::Assigning { operation_id } => {
            let token = sign(tpm)?;
            dps.operation(id, operation_id, &token)?
        }
        Stage::Assigned { .. } => return Ok((stage.clone(), None)),
    };
    let operation_id = match stage {
        Stage::Assigning { operation_id } => Some(operation_id),
        _ => None,
    };
    let next = next_stage(&polled, operation_id)?;
    if let (Stage::Assigned { .. }, Some(chain)) = (
        &next.0,
        polled
            .status
            .registration_state
            .as_ref()
            .and_then(|s| s.issued_certificate_chain.as_ref()),
    ) {
        save_chain(&device.chain_file, chain)?;
    }
    // On assignment DPS hands the device's key over once more (`registrationState.tpm`), and
    // the Azure clients import it: it is the key for the hub. Import it unless it is the blob
    // already imported in this run.
    if let (Stage::Assigned { .. }, Some(tpm_result)) = (
        &next.0,
        polled
            .status
            .registration_state
            .as_ref()
            .and_then(|s| s.tpm.as_ref()),
    ) {
        let blob = &tpm_result.authentication_key.0;
        if *imported != Some(sha256(&[blob])) {
            tpm.import_authentication_key(blob)?;
            *imported = Some(sha256(&[blob]));
            tracing::info!("hub authentication key imported into the TPM");
        }
    }
    Ok(next)
}

/// What answers the service's attestation challenge: the quote of the PCRs it asks for, and
/// with `certify` the certification of the certificate key over the same nonce. A bank this
/// TPM has not allocated cannot be quoted: the device says so and registers without a quote
/// (the enrollment's policy decides what that means).
fn answer(
    tpm: &mut Tpm,
    attestation: &AttestationChallenge,
    certify: bool,
) -> Result<(Option<Quote>, Option<KeyCertification>), ProvisionError> {
    let answered = if certify {
        tpm.answer_with_certification(attestation)
            .map(|(quote, certification)| (quote, Some(certification)))
    } else {
        tpm.answer_attestation(attestation).map(|q| (Some(q), None))
    };
    match answered {
        Ok(answer) => {
            tracing::info!(
                quoted = answer.0.is_some(),
                certified = answer.1.is_some(),
                "attestation challenge answered"
            );
            Ok(answer)
        }
        Err(e @ TpmError::BankNotAllocated { .. }) => {
            tracing::warn!(error = %e, "registering without a quote");
            let mut unquoted = attestation.clone();
            unquoted.pcr_selection.clear();
            if certify {
                let (_, certification) = tpm.answer_with_certification(&unquoted)?;
                Ok((None, Some(certification)))
            } else {
                Ok((None, None))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes the issued chain as PEM, leaf first.
fn save_chain(path: &Path, chain: &[Base64Bytes]) -> Result<(), ProvisionError> {
    let pem: String = chain
        .iter()
        .map(|certificate| dps_protocol::ek_cert::pem_block("CERTIFICATE", &certificate.0))
        .collect();
    std::fs::write(path, pem).map_err(|source| ProvisionError::StateFile {
        path: path.display().to_string(),
        source,
    })?;
    tracing::info!(path = %path.display(), "certificate chain saved");
    Ok(())
}

/// Runs first-boot provisioning to the end (or to an error) against the service `dps` talks to.
pub fn provision(
    tpm: &mut Tpm,
    dps: &DpsClient,
    options: &Options,
) -> Result<Outcome, ProvisionError> {
    let mut run = match Run::start(tpm, dps, options)? {
        Start::Done(outcome) => return Ok(outcome),
        Start::Running(run) => run,
    };
    loop {
        if let Some(outcome) = run.advance()? {
            return Ok(outcome);
        }
    }
}

/// Where [`Run::start`] leaves a device.
pub(crate) enum Start<'a> {
    /// The state file says assigned and the key is in the TPM: nothing to send.
    Done(Outcome),
    Running(Box<Run<'a>>),
}

/// One provisioning run, advanced one persisted step at a time ([`provision`] loops over it;
/// tests stop it between steps, as a power cut would).
pub(crate) struct Run<'a> {
    tpm: &'a mut Tpm,
    dps: &'a DpsClient,
    options: &'a Options,
    device: Device,
    pub(crate) state: State,
    deadline: Instant,
    backoff: Backoff,
    /// Whether the run already started over once (a second refusal is an error).
    restarted: bool,
    /// SHA-256 of the blob imported in this run, so the same key is not imported twice.
    imported: Option<[u8; 32]>,
}

impl<'a> Run<'a> {
    pub(crate) fn start(
        tpm: &'a mut Tpm,
        dps: &'a DpsClient,
        options: &'a Options,
    ) -> Result<Start<'a>, ProvisionError> {
        let ek = tpm.endorsement_key()?;
        let registration_id = match &options.registration_id {
            Some(id) => RegistrationId::parse(id)?,
            None => RegistrationId::from_endorsement_key(&ek),
        };
        let id = registration_id.as_str();
        let fresh = State {
            registration_id: id.to_owned(),
            endpoint: dps.endpoint().to_owned(),
            id_scope: dps.id_scope().to_owned(),
            stage: Stage::Unprovisioned,
            updated_unix: unix_now(),
        };
        let state = resume(tpm, options, fresh)?;
        if let Some(outcome) = assigned(&state, true) {
            return Ok(Start::Done(outcome));
        }
        // Read (or create) the SRK only now: a provisioned device's reboot does not need it.
        let srk = tpm.storage_root_key()?;
        let ek_certificate = match &options.ek_certificate {
            EkCertificateSource::Tpm => match tpm.endorsement_key_certificate() {
                Ok(found) => found.map(|certificate| EkCertificateBundle {
                    certificate,
                    chain: tpm.endorsement_key_certificate_chain().unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "cannot read the EK certificate chain from NV");
                        Vec::new()
                    }),
                }),
                // Without it, an enrolled device still provisions: say so and go on.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the EK certificate from the TPM");
                    None
                }
            },
            EkCertificateSource::Given(bundle) => Some(bundle.clone()),
            EkCertificateSource::Omit => None,
        };
        // A TPM that cannot make an attestation key still provisions, as a DPS device does.
        let attestation_key = if options.attest {
            tpm.attestation_key(options.attestation_key)
                .inspect_err(|e| tracing::warn!(error = %e, "no attestation key; not attesting"))
                .ok()
        } else {
            None
        };
        // The proof that the certificate key lives in the TPM needs the attestation key.
        let csr = match (&attestation_key, options.certificate) {
            (Some(_), true) => Some(crate::certificate::certificate_request(tpm, id)?),
            (None, true) => {
                tracing::warn!("no attestation key: asking for no certificate");
                None
            }
            (_, false) => None,
        };
        let device = Device {
            registration_id: id.to_owned(),
            ek,
            srk,
            resource: sas::registration_resource(dps.id_scope(), id),
            payload: options.payload.clone(),
            ek_certificate,
            attestation_key,
            csr,
            chain_file: chain_file(&options.state_file),
        };
        Ok(Start::Running(Box::new(Self {
            tpm,
            dps,
            options,
            device,
            state,
            deadline: Instant::now() + options.deadline,
            backoff: Backoff {
                next: Duration::from_secs(1),
                max: options.max_backoff,
            },
            restarted: false,
            imported: None,
        })))
    }

    /// One step: the protocol call of the current stage, the state saved if it moved on, and
    /// the wait the service asked for. `Some` once assigned.
    pub(crate) fn advance(&mut self) -> Result<Option<Outcome>, ProvisionError> {
        if Instant::now() >= self.deadline {
            return Err(ProvisionError::Deadline(self.options.deadline));
        }
        tracing::debug!(stage = ?self.state.stage, "provisioning step");
        let was_polling = matches!(self.state.stage, Stage::Assigning { .. });
        match step(
            self.tpm,
            self.dps,
            &self.device,
            &self.state.stage,
            self.options.sas_ttl,
            &mut self.imported,
        ) {
            Ok((next, wait)) => {
                if next != self.state.stage {
                    self.state.stage = next;
                    self.state.updated_unix = unix_now();
                    save_state(&self.options.state_file, &self.state)?;
                }
                if let Some(outcome) = assigned(&self.state, false) {
                    return Ok(Some(outcome));
                }
                // The first poll goes out at once (a service may assign within the register
                // call); after that, Retry-After or a doubling backoff paces the polls.
                if was_polling {
                    self.backoff.wait(wait, self.deadline);
                }
            }
            Err(ProvisionError::Dps(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "transient failure; retrying");
                let hint = match e {
                    ClientError::Throttled { retry_after } => {
                        Some(Duration::from_secs(retry_after))
                    }
                    _ => None,
                };
                self.backoff.wait(hint, self.deadline);
            }
            Err(ProvisionError::Dps(
                ClientError::SignatureRefused | ClientError::OperationNotFound { .. },
            )) if !self.restarted && self.state.stage != Stage::Unprovisioned => {
                tracing::warn!("the service no longer knows this key or operation; starting over");
                self.restarted = true;
                self.state.stage = Stage::Unprovisioned;
                save_state(&self.options.state_file, &self.state)?;
            }
            Err(e @ ProvisionError::Failed { .. }) => {
                // The service decided against this registration (a webhook failed, say): the
                // next run registers afresh instead of polling the failed operation again.
                self.state.stage = Stage::Unprovisioned;
                self.state.updated_unix = unix_now();
                save_state(&self.options.state_file, &self.state)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        Ok(None)
    }
}

/// The stage an operation status leads to, and how long to wait before polling again.
fn next_stage(
    polled: &Polled,
    operation_id: Option<&String>,
) -> Result<(Stage, Option<Duration>), ProvisionError> {
    let status = &polled.status;
    match status.status {
        RegistrationStatus::Assigned => {
            let state = status.registration_state.as_ref();
            let hub = state.and_then(|s| s.assigned_hub.clone());
            let device = state.and_then(|s| s.device_id.clone());
            match (hub, device) {
                (Some(assigned_hub), Some(device_id)) => Ok((
                    Stage::Assigned {
                        assigned_hub,
                        device_id,
                        payload: state.and_then(|s| s.payload.clone()),
                    },
                    None,
                )),
                // "assigned" in a register response without its state: poll for it.
                _ => Ok((
                    Stage::Assigning {
                        operation_id: status.operation_id.clone(),
                    },
                    polled.retry_after,
                )),
            }
        }
        RegistrationStatus::Assigning | RegistrationStatus::Unassigned => {
            let operation_id = operation_id
                .cloned()
                .unwrap_or_else(|| status.operation_id.clone());
            Ok((Stage::Assigning { operation_id }, polled.retry_after))
        }
        RegistrationStatus::Failed | RegistrationStatus::Disabled => {
            let state = status.registration_state.as_ref();
            Err(ProvisionError::Failed {
                status: format!("{:?}", status.status).to_lowercase(),
                error_code: state.and_then(|s| s.error_code).unwrap_or_default(),
                message: state
                    .and_then(|s| s.error_message.clone())
                    .unwrap_or_default(),
            })
        }
    }
}

/// Runs killed between steps, then finished by the real binary's code path on a new run. They
/// drive [`Run`] directly (crate-private), so the product API carries no test hooks.
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use sqlx::PgPool;
    use test_support::{Reply, Swtpm, TestApp, Webhook, ID_SCOPE};

    /// Where the device provisions; the blocking client is made (and dropped) on a blocking
    /// thread, off the test's runtime.
    #[derive(Clone)]
    struct Target {
        /// Given with a trailing slash, as a user may type it.
        endpoint: String,
        ca_pem: Vec<u8>,
        tcti: String,
    }

    impl Target {
        fn client(&self) -> DpsClient {
            DpsClient::new(
                &self.endpoint,
                ID_SCOPE,
                Some(&self.ca_pem),
                Duration::from_secs(10),
            )
            .unwrap()
        }
    }

    /// Enrolls the TPM behind `swtpm` with these extra DPS fields; returns where and how to
    /// provision it.
    async fn setup(
        app: &TestApp,
        swtpm: &Swtpm,
        dir: &Path,
        fields: serde_json::Value,
    ) -> (Target, Options) {
        let ek = {
            let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
            tpm.endorsement_key().unwrap()
        };
        let id = RegistrationId::from_endorsement_key(&ek);
        let mut e = test_support::enrollment(id.as_str(), &ek);
        e.extra = fields.as_object().cloned().unwrap_or_default();
        app.enroll_with(e).await;
        let options = Options {
            registration_id: None,
            state_file: dir.join("state.json"),
            force: false,
            sas_ttl: 60,
            deadline: Duration::from_secs(30),
            max_backoff: Duration::from_secs(2),
            payload: None,
            ek_certificate: EkCertificateSource::Tpm,
            attest: true,
            attestation_key: None,
            certificate: false,
        };
        let target = Target {
            endpoint: format!("{}/", app.base),
            ca_pem: app.pki.ca_pem.clone(),
            tcti: swtpm.tcti(),
        };
        (target, options)
    }

    /// Advances a fresh run until `stop` accepts its saved stage, then drops it (a kill).
    async fn run_until(target: &Target, options: &Options, stop: fn(&Stage) -> bool) -> Stage {
        let (target, options) = (target.clone(), options.clone());
        tokio::task::spawn_blocking(move || {
            let client = target.client();
            let mut tpm = Tpm::open(&target.tcti).unwrap();
            let Start::Running(mut run) = Run::start(&mut tpm, &client, &options).unwrap() else {
                panic!("already provisioned")
            };
            while !stop(&run.state.stage) {
                assert!(run.advance().unwrap().is_none(), "assigned before the stop");
            }
            run.state.stage.clone()
        })
        .await
        .unwrap()
    }

    async fn finish(target: &Target, options: &Options) -> Outcome {
        let (target, options) = (target.clone(), options.clone());
        tokio::task::spawn_blocking(move || {
            let client = target.client();
            let mut tpm = Tpm::open(&target.tcti).unwrap();
            provision(&mut tpm, &client, &options).unwrap()
        })
        .await
        .unwrap()
    }

    async fn count(pool: &PgPool, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
    }

    #[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
    async fn a_run_killed_after_the_import_completes_on_the_next(pool: PgPool) {
        let app = TestApp::spawn(pool.clone()).await;
        let swtpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let (target, options) = setup(&app, &swtpm, dir.path(), serde_json::json!({})).await;

        let stage = run_until(&target, &options, |s| {
            matches!(s, Stage::KeyImported { .. })
        })
        .await;
        assert_eq!(
            stage,
            Stage::KeyImported {
                quote: None,
                certify: None
            }
        );
        assert_eq!(
            load_state(&options.state_file).unwrap().stage,
            Stage::KeyImported {
                quote: None,
                certify: None
            }
        );
        // The endpoint is saved as the client uses it, without the trailing slash given.
        assert_eq!(load_state(&options.state_file).unwrap().endpoint, app.base);

        let outcome = finish(&target, &options).await;
        assert!(!outcome.already_provisioned);
        assert_eq!(
            count(&pool, "SELECT count(*) FROM challenges").await,
            0,
            "the second run used the key of the first, no new challenge"
        );
    }

    /// A device polls only while an allocation webhook decides (a decision made at once comes
    /// with the register answer): the webhook here takes a second.
    #[sqlx::test(migrator = "provisioning_service::MIGRATOR")]
    async fn a_run_killed_while_polling_completes_on_the_next(pool: PgPool) {
        let pki = std::sync::Arc::new(test_support::Pki::new());
        let mut settings = test_support::settings();
        settings.webhook_ca_pem = Some(pki.ca_pem.clone());
        let app = TestApp::spawn_with(pool.clone(), settings, pki).await;
        let answer = serde_json::json!({"iotHubHostName": test_support::HUBS[0]});
        let webhook = Webhook::start(&app.pki, Reply::Late(Duration::from_secs(1), answer)).await;
        let swtpm = Swtpm::start();
        let dir = tempfile::tempdir().unwrap();
        let custom = serde_json::json!({"allocationPolicy": "custom",
            "customAllocationDefinition": {"webhookUrl": webhook.url, "apiVersion": "2021-10-01"}});
        let (target, options) = setup(&app, &swtpm, dir.path(), custom).await;

        let stage = run_until(&target, &options, |s| matches!(s, Stage::Assigning { .. })).await;
        let Stage::Assigning { operation_id } = stage else {
            panic!("{stage:?}")
        };
        finish(&target, &options).await;
        // It polled the saved operation rather than registering again.
        let current: String = sqlx::query_scalar("SELECT operation_id::text FROM registrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(current, operation_id);
    }
}
