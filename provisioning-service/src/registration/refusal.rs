//! Why a device step refuses a request, by name. The decision logic returns these; the HTTP
//! layer maps each to a DPS status and `errorCode` in one place (`http::error`), and tests
//! assert the reason rather than the status it shares with others.

use dps_protocol::attest::policy::Failure;
use dps_protocol::ek_cert::EkCertError;
use dps_protocol::{CryptoError, RegistrationIdError, SasError};

use crate::cpu::CpuError;
use crate::issuance::CsrRefusal;
use crate::sealing::SealError;
use crate::store::StoreError;

/// A request the protocol refuses. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    // --- malformed (400) ---
    #[error("registrationId: {0}")]
    InvalidRegistrationId(#[source] RegistrationIdError),
    #[error("registrationId in the body does not match the path")]
    RegistrationIdMismatch,
    #[error("tpm attestation is required")]
    AttestationRequired,
    /// A CSR the enrollment's credential policy refuses, or one sent to a status lookup.
    #[error("csr: {0}")]
    Csr(#[source] CsrRefusal),
    /// The EK or SRK does not parse, or is not a key this service can seal to.
    #[error("{field}: {source}")]
    InvalidKey {
        field: &'static str,
        #[source]
        source: CryptoError,
    },
    /// More CA certificates than any TPM carries: each would be a path search candidate.
    #[error(
        "endorsementKeyCertificateChain: more than {} certificates",
        dps_protocol::ek_cert::MAX_PRESENTED_CHAIN
    )]
    EkCertificateChainTooLong,

    // --- not admitted or not authenticated (401; the reason is logged, never sent) ---
    #[error("no enrollment for this registration id")]
    NotEnrolled,
    #[error("this endorsement key is enrolled under another registration id")]
    EnrolledUnderAnotherId,
    #[error("the endorsement key does not match the enrollment")]
    EkMismatch,
    #[error("the enrollment is disabled")]
    Disabled,
    #[error("no SAS token")]
    MissingSas,
    #[error("the Authorization header is not visible ASCII")]
    UnreadableAuthorization,
    #[error("malformed SAS token: {0}")]
    MalformedSas(#[source] SasError),
    /// The token was checked against every live key of the device and none verified it.
    #[error("SAS token refused: {0}")]
    SasRejected(#[source] SasError),
    /// The device has no live key: no live challenge and no registration (for this TPM).
    #[error("no live key to verify the SAS token with")]
    NoLiveKey,
    #[error(
        "a device admitted by an enrollment group must use the registration id derived from its EK"
    )]
    GroupIdNotDerived,
    #[error("EK certificate: {0}")]
    EkCertificate(#[source] EkCertError),
    #[error("the certificate does not have the TCG EK certificate usage (2.23.133.8.1), and no group that takes such certificates admits it")]
    NotAnEkCertificate,
    #[error("the EK certificate certifies another key than the presented EK")]
    EkCertificateMismatch,
    #[error("no enabled enrollment group admits this EK certificate")]
    NoGroupAdmits,
    #[error("the enrollment group is disabled, deleted or full")]
    GroupClosed,
    /// The quote failed the enrollment's `attestationPolicy` (mode `require`); answered as any
    /// failed attestation, the device learns nothing more.
    #[error("attestation refused: {0}")]
    Attestation(#[source] Failure),

    // --- unknown (404) ---
    #[error("operation not found")]
    UnknownOperation,

    // --- conflict (409) ---
    /// The device's state changed under every attempt to write it (concurrent registrations of
    /// one device); it may retry.
    #[error("the registration changed while it was being written; retry")]
    Contended,

    // --- throttled (429) ---
    #[error("too many requests; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
}

impl Refusal {
    /// A fixed name for the reason (a metrics label; never carries request data).
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::InvalidRegistrationId(_) => "invalid_registration_id",
            Self::RegistrationIdMismatch => "registration_id_mismatch",
            Self::AttestationRequired => "attestation_required",
            Self::Csr(_) => "csr",
            Self::InvalidKey { .. } => "invalid_key",
            Self::NotEnrolled => "not_enrolled",
            Self::EnrolledUnderAnotherId => "enrolled_under_another_id",
            Self::EkMismatch => "ek_mismatch",
            Self::Disabled => "disabled",
            Self::MissingSas => "missing_sas",
            Self::UnreadableAuthorization => "unreadable_authorization",
            Self::MalformedSas(_) => "malformed_sas",
            Self::SasRejected(_) => "sas_rejected",
            Self::NoLiveKey => "no_live_key",
            Self::GroupIdNotDerived => "group_id_not_derived",
            Self::EkCertificate(_) => "ek_certificate",
            Self::NotAnEkCertificate => "not_an_ek_certificate",
            Self::EkCertificateMismatch => "ek_certificate_mismatch",
            Self::NoGroupAdmits => "no_group_admits",
            Self::EkCertificateChainTooLong => "ek_certificate_chain_too_long",
            Self::GroupClosed => "group_closed",
            Self::Attestation(_) => "attestation",
            Self::UnknownOperation => "unknown_operation",
            Self::Contended => "contended",
            Self::Throttled { .. } => "throttled",
        }
    }
}

/// What a device step fails with: a refusal, or a fault of the service (logged in full, reported
/// as an internal error).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("database")]
    Store(#[from] StoreError),
    #[error("a sealed device key cannot be opened")]
    Seal(#[from] SealError),
    #[error("issuing the device key")]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Issue(#[from] crate::issuance::IssueError),
    /// Checked when written; unreadable now means the database was edited by hand.
    #[error("the stored attestationPolicy is unreadable: {0}")]
    Policy(String),
}

impl From<sqlx::Error> for StepError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Db(err))
    }
}

impl StepError {
    /// The refusal, if this is one (tests match on it).
    #[must_use]
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Self::Refused(r) => Some(r),
            _ => None,
        }
    }
}
