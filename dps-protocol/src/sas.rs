//! Shared access signature (SAS) tokens, as DPS and IoT Hub use them (docs/protocol.md §3):
//!
//! `SharedAccessSignature sr={URL-encoded resource}&sig={URL-encoded base64 HMAC}&se={expiry}&skn={key name}`
//!
//! The string-to-sign is `sr` exactly as it appears in the token, `"\n"`, then `se`. Verifying
//! over the `sr` as received (rather than re-encoding it) accepts every client's choice of
//! percent-encoding, while the decoded resource is still compared with the one accessed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::crypto::{hmac_sha256_verify, SHA256_SIZE};
use crate::error::SasError;

const SCHEME: &str = "SharedAccessSignature ";

/// The key name devices use towards DPS.
pub const REGISTRATION_KEY_NAME: &str = "registration";

/// What JavaScript's `encodeURIComponent` leaves alone (the Azure SDKs encode so).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Something that computes HMAC-SHA-256 with a key it holds: a TPM, or a key in memory.
pub trait Signer {
    type Error;
    fn sign(&mut self, data: &[u8]) -> Result<[u8; SHA256_SIZE], Self::Error>;
}

/// A key held in memory (service side, tests, load generators).
pub struct SoftwareKey<'a>(pub &'a [u8]);

impl Signer for SoftwareKey<'_> {
    type Error = std::convert::Infallible;
    fn sign(&mut self, data: &[u8]) -> Result<[u8; SHA256_SIZE], Self::Error> {
        Ok(crate::crypto::hmac_sha256(self.0, &[data]))
    }
}

/// The DPS resource of a device registration: `{idScope}/registrations/{registrationId}`.
#[must_use]
pub fn registration_resource(id_scope: &str, registration_id: &str) -> String {
    format!("{id_scope}/registrations/{registration_id}")
}

/// URL-encodes the lowercased resource: the `sr` field.
#[must_use]
pub fn encode_resource(resource: &str) -> String {
    utf8_percent_encode(&resource.to_lowercase(), COMPONENT).to_string()
}

/// `sr + "\n" + se`.
#[must_use]
pub fn string_to_sign(encoded_resource: &str, expiry: u64) -> String {
    format!("{encoded_resource}\n{expiry}")
}

/// Builds a token for `resource` expiring at `expiry` (Unix seconds), signed by `signer`.
pub fn build_token<S: Signer>(
    resource: &str,
    expiry: u64,
    key_name: Option<&str>,
    signer: &mut S,
) -> Result<String, S::Error> {
    let sr = encode_resource(resource);
    let sig = signer.sign(string_to_sign(&sr, expiry).as_bytes())?;
    let sig = utf8_percent_encode(&STANDARD.encode(sig), COMPONENT).to_string();
    let mut token = format!("{SCHEME}sr={sr}&sig={sig}&se={expiry}");
    if let Some(skn) = key_name {
        token.push_str("&skn=");
        token.push_str(&utf8_percent_encode(skn, COMPONENT).to_string());
    }
    Ok(token)
}

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct VerifyPolicy<'a> {
    /// The resource being accessed (compared case-insensitively with the decoded `sr`).
    pub resource: &'a str,
    /// The `skn` required, if any.
    pub key_name: Option<&'a str>,
    /// The verifier's clock, Unix seconds.
    pub now: u64,
    /// Clock skew tolerated in both directions, seconds.
    pub max_skew: u64,
    /// The longest lifetime accepted: `se` may be at most `now + max_lifetime + max_skew`.
    pub max_lifetime: u64,
}

/// A parsed token.
#[derive(Clone, PartialEq, Eq)]
pub struct SasToken {
    /// `sr` as it appeared (still percent-encoded): the signed form.
    pub raw_resource: String,
    /// `sr` decoded.
    pub resource: String,
    pub signature: [u8; SHA256_SIZE],
    pub expiry: u64,
    pub key_name: Option<String>,
}

impl std::fmt::Debug for SasToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("expiry", &self.expiry)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

fn decode_field(value: &str, field: &'static str) -> Result<String, SasError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| SasError::MalformedField { field })
}

impl SasToken {
    /// Parses `SharedAccessSignature k=v&k=v...` with the fields in any order. `sr`, `sig` and
    /// `se` are required, `skn` optional; unknown or repeated fields are errors.
    pub fn parse(token: &str) -> Result<Self, SasError> {
        let fields = token.strip_prefix(SCHEME).ok_or(SasError::MissingScheme)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for pair in fields.split('&') {
            let (key, value) = pair
                .split_once('=')
                .ok_or(SasError::MalformedField { field: "pair" })?;
            let (slot, field) = match key {
                "sr" => (&mut sr, "sr"),
                "sig" => (&mut sig, "sig"),
                "se" => (&mut se, "se"),
                "skn" => (&mut skn, "skn"),
                _ => return Err(SasError::MalformedField { field: "unknown" }),
            };
            if slot.replace(value).is_some() {
                return Err(SasError::MalformedField { field });
            }
        }
        let raw_resource = sr.ok_or(SasError::MalformedField { field: "sr" })?;
        let sig = sig.ok_or(SasError::MalformedField { field: "sig" })?;
        let se = se.ok_or(SasError::MalformedField { field: "se" })?;

        let resource = decode_field(raw_resource, "sr")?;
        let sig = decode_field(sig, "sig")?;
        let signature = STANDARD
            .decode(sig)
            .ok()
            .and_then(|bytes| <[u8; SHA256_SIZE]>::try_from(bytes).ok())
            .ok_or(SasError::MalformedSignature)?;
        if se.is_empty() || !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SasError::MalformedExpiry);
        }
        let expiry = se.parse().map_err(|_| SasError::MalformedExpiry)?;
        let key_name = skn.map(|v| decode_field(v, "skn")).transpose()?;
        Ok(Self {
            raw_resource: raw_resource.to_owned(),
            resource,
            signature,
            expiry,
            key_name,
        })
    }

    /// Checks resource, key name and expiry, then the signature (constant time) with `key`.
    /// Cheap checks come first so a forged token costs one comparison, not an HMAC.
    pub fn verify(&self, key: &[u8], policy: &VerifyPolicy<'_>) -> Result<(), SasError> {
        if !self.resource.eq_ignore_ascii_case(policy.resource) {
            return Err(SasError::ResourceMismatch);
        }
        if let Some(expected) = policy.key_name {
            if self.key_name.as_deref() != Some(expected) {
                return Err(SasError::KeyNameMismatch);
            }
        }
        if self.expiry.saturating_add(policy.max_skew) < policy.now {
            return Err(SasError::Expired);
        }
        let latest = policy
            .now
            .saturating_add(policy.max_lifetime)
            .saturating_add(policy.max_skew);
        if self.expiry > latest {
            return Err(SasError::ExpiryTooFar);
        }
        let to_sign = string_to_sign(&self.raw_resource, self.expiry);
        if hmac_sha256_verify(key, &[to_sign.as_bytes()], &self.signature) {
            Ok(())
        } else {
            Err(SasError::InvalidSignature)
        }
    }
}
