//! The DPS device API over HTTPS (reqwest, rustls): the three calls a TPM device makes, and DPS
//! error bodies turned into errors a person can act on.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dps_protocol::wire::{
    Base64Bytes, DeviceRegistration, ErrorBody, KeyCertification, Quote,
    RegistrationOperationStatus, TpmAttestation, TpmChallenge,
};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

/// The api-version this client sends: a stable DPS device API version with TPM attestation,
/// which every DPS (and this service) accepts.
pub const API_VERSION: &str = "2019-03-31";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot read the CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file holds no usable PEM certificate")]
    BadCa(#[source] reqwest::Error),
    #[error("cannot reach the provisioning service at {endpoint}")]
    Transport {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401 on the first call: unknown registration id, another EK enrolled, or disabled.
    #[error("the provisioning service does not accept this device (registration id {registration_id}): check that its EK is enrolled under this registration id and the enrollment is enabled")]
    NotEnrolled { registration_id: String },
    /// 401 with a SAS: the key in the TPM is not the one the service issued (or it expired), or
    /// the device's attestation failed its enrollment's policy (the service does not say which).
    #[error("the provisioning service refused the registration: the key in the TPM is not the one it issued (or it expired), or the device's attestation did not satisfy its enrollment's policy")]
    SignatureRefused,
    #[error("throttled by the provisioning service; retry after {retry_after} s")]
    Throttled { retry_after: u64 },
    #[error("the provisioning service rejected the request ({status}): {message}")]
    Rejected {
        status: u16,
        error_code: u32,
        message: String,
    },
    #[error("the provisioning service does not know operation {operation_id}")]
    OperationNotFound { operation_id: String },
    #[error("unexpected response from the provisioning service ({status}): {what}")]
    Unexpected { status: u16, what: &'static str },
}

impl ClientError {
    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Throttled { .. } => true,
            Self::Rejected { status, .. } | Self::Unexpected { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// What the service said about an operation.
#[derive(Debug)]
pub struct Polled {
    pub status: RegistrationOperationStatus,
    /// `Retry-After`, when the operation is still running.
    pub retry_after: Option<Duration>,
}

/// A DPS endpoint and ID scope.
pub struct DpsClient {
    endpoint: String,
    id_scope: String,
    http: Client,
}

impl std::fmt::Debug for DpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpsClient")
            .field("endpoint", &self.endpoint)
            .field("id_scope", &self.id_scope)
            .finish_non_exhaustive()
    }
}

fn retry_after(response: &Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl DpsClient {
    /// `endpoint` is `https://host[:port]`; `ca_pem` adds a trusted root (the built-in web PKI
    /// roots, which the real DPS needs, stay trusted).
    pub fn new(
        endpoint: &str,
        id_scope: &str,
        ca_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut builder = Client::builder()
            .use_rustls_tls()
            .timeout(timeout)
            .user_agent(concat!("dps-tpm-device-client/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(pem).map_err(ClientError::BadCa)?,
            );
        }
        let http = builder.build().map_err(|source| ClientError::Transport {
            endpoint: endpoint.to_owned(),
            source,
        })?;
        Ok(Self {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            id_scope: id_scope.to_owned(),
            http,
        })
    }

    /// Reads a CA file for [`DpsClient::new`].
    pub fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, ClientError> {
        std::fs::read(path).map_err(|source| ClientError::CaFile {
            path: path.display().to_string(),
            source,
        })
    }

    /// The service's base URL, without a trailing slash.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    #[must_use]
    pub fn id_scope(&self) -> &str {
        &self.id_scope
    }

    fn url(&self, registration_id: &str, tail: &str) -> String {
        format!(
            "{}/{}/registrations/{registration_id}{tail}?api-version={API_VERSION}",
            self.endpoint, self.id_scope
        )
    }

    fn transport(&self) -> impl FnOnce(reqwest::Error) -> ClientError + '_ {
        move |source| ClientError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// The register body `device` sends: on the first call its keys (and EK certificate and
    /// attestation key, when it has them); on the SAS call its keys and `answers`.
    fn body(device: &Presented<'_>, answers: Option<&Answers<'_>>) -> DeviceRegistration {
        let mut tpm = TpmAttestation::keys(device.ek.to_vec(), device.srk.to_vec());
        let Some(answers) = answers else {
            if let Some(bundle) = device.certificate {
                tpm.endorsement_key_certificate = Some(Base64Bytes(bundle.certificate.clone()));
                tpm.endorsement_key_certificate_chain =
                    bundle.chain.iter().cloned().map(Base64Bytes).collect();
            }
            tpm.attestation_key = device.attestation_key.map(|k| Base64Bytes(k.to_vec()));
            return DeviceRegistration {
                registration_id: device.registration_id.to_owned(),
                tpm: Some(tpm),
                csr: None,
                payload: device.payload.cloned(),
            };
        };
        tpm.quote = answers.quote.cloned();
        tpm.certify = answers.certify.cloned();
        DeviceRegistration {
            registration_id: device.registration_id.to_owned(),
            tpm: Some(tpm),
            csr: answers.csr.map(|c| Base64Bytes(c.to_vec())),
            payload: device.payload.cloned(),
        }
    }

    /// Turns a DPS error response into a [`ClientError`]; `on_401` says what a 401 means here.
    fn error(response: Response, on_401: ClientError) -> ClientError {
        let status = response.status();
        let after = retry_after(&response);
        let body: Option<ErrorBody> = response.json().ok();
        match status {
            StatusCode::UNAUTHORIZED => on_401,
            StatusCode::TOO_MANY_REQUESTS => ClientError::Throttled {
                retry_after: after.unwrap_or(5),
            },
            _ => match body {
                Some(b) => ClientError::Rejected {
                    status: status.as_u16(),
                    error_code: b.error_code,
                    message: b.message,
                },
                None => ClientError::Unexpected {
                    status: status.as_u16(),
                    what: "not a DPS error body",
                },
            },
        }
    }

    /// The first register call, without SAS: returns the challenge (the `authenticationKey`
    /// blob, and an attestation challenge if the device showed an attestation key and the
    /// service asks for a quote). With an EK certificate, a device that is not enrolled may be
    /// admitted by a TPM enrollment group.
    pub fn challenge(&self, device: &Presented<'_>) -> Result<TpmChallenge, ClientError> {
        let registration_id = device.registration_id;
        let response = self
            .http
            .put(self.url(registration_id, "/register"))
            .json(&Self::body(device, None))
            .send()
            .map_err(self.transport())?;
        let status = response.status();
        if status != StatusCode::UNAUTHORIZED {
            return Err(Self::error(
                response,
                ClientError::Unexpected {
                    status: status.as_u16(),
                    what: "no challenge",
                },
            ));
        }
        // A 401 is the challenge if it carries a key; otherwise the device is not accepted.
        let text = response.text().map_err(self.transport())?;
        serde_json::from_str::<TpmChallenge>(&text).map_err(|_| ClientError::NotEnrolled {
            registration_id: registration_id.to_owned(),
        })
    }

    /// The second register call, with a SAS token signed by the imported key, and what answers
    /// the attestation challenge and asks for a certificate (`answers`).
    pub fn register(
        &self,
        device: &Presented<'_>,
        answers: &Answers<'_>,
        sas: &str,
    ) -> Result<Polled, ClientError> {
        let response = self
            .http
            .put(self.url(device.registration_id, "/register"))
            .header(reqwest::header::AUTHORIZATION, sas)
            .json(&Self::body(device, Some(answers)))
            .send()
            .map_err(self.transport())?;
        Self::operation_response(response)
    }

    /// `GET .../operations/{operationId}`.
    pub fn operation(
        &self,
        registration_id: &str,
        operation_id: &str,
        sas: &str,
    ) -> Result<Polled, ClientError> {
        let response = self
            .http
            .get(self.url(registration_id, &format!("/operations/{operation_id}")))
            .header(reqwest::header::AUTHORIZATION, sas)
            .send()
            .map_err(self.transport())?;
        if response.status() == StatusCode::NOT_FOUND {
            return Err(ClientError::OperationNotFound {
                operation_id: operation_id.to_owned(),
            });
        }
        Self::operation_response(response)
    }

    fn operation_response(response: Response) -> Result<Polled, ClientError> {
        let status = response.status();
        if status != StatusCode::OK && status != StatusCode::ACCEPTED {
            return Err(Self::error(response, ClientError::SignatureRefused));
        }
        let after = retry_after(&response).map(Duration::from_secs);
        let status = response.json().map_err(|_| ClientError::Unexpected {
            status: status.as_u16(),
            what: "not an operation status",
        })?;
        Ok(Polled {
            status,
            retry_after: after,
        })
    }
}

/// What the SAS call adds to the register body: the quote answering the attestation
/// challenge, the certification of the CSR's key, and the CSR (each this service's extension
/// but `csr`, DPS 2026-04-01's).
#[derive(Debug, Clone, Copy, Default)]
pub struct Answers<'a> {
    pub quote: Option<&'a Quote>,
    pub certify: Option<&'a KeyCertification>,
    pub csr: Option<&'a [u8]>,
}

/// What a device presents in its register calls.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub registration_id: &'a str,
    pub ek: &'a [u8],
    pub srk: &'a [u8],
    pub payload: Option<&'a serde_json::Value>,
    pub certificate: Option<&'a EkCertificateBundle>,
    /// The attestation key's `TPM2B_PUBLIC` (this service's extension).
    pub attestation_key: Option<&'a [u8]>,
}

/// An EK certificate as the device sends it (this service's extension of the register body):
/// the certificate as read from the TPM, and any CA certificates found beside it (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificateBundle {
    pub certificate: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

/// Base64 as DPS carries keys (for printing what a factory uploads).
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
