//! DPS registration ids: parsed once at the boundary, so hostile input (path traversal, SQL,
//! overlong) never reaches a handler or a query, and ids that differ only in case are one id.

use data_encoding::BASE32_NOPAD;

use crate::crypto::sha256;
use crate::error::RegistrationIdError;

/// The DPS limit on registration id length.
pub const MAX_LEN: usize = 128;

/// A valid registration id in its canonical form: 1 to 128 characters from `a-z 0-9 - . _ :`,
/// ending in a letter, a digit or `-` (the DPS rules for individual enrollments). DPS registration
/// ids are case-insensitive ("a case-insensitive string of alphanumeric characters plus `-` `.`
/// `_` `:`", Azure DPS docs, concepts-service.md), and aziot-identityd sends whatever case it is
/// configured with: [`RegistrationId::parse`] accepts `A-Z` and keeps the lowercase form, which is
/// what is stored, compared, signed over (SAS resources are lowercased anyway) and returned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistrationId(String);

impl RegistrationId {
    pub fn parse(s: &str) -> Result<Self, RegistrationIdError> {
        let len = s.chars().count();
        if len == 0 {
            return Err(RegistrationIdError::Empty);
        }
        if len > MAX_LEN {
            return Err(RegistrationIdError::TooLong { len, max: MAX_LEN });
        }
        if let Some(c) = s
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '.' | '_' | ':'))
        {
            return Err(RegistrationIdError::InvalidCharacter(c));
        }
        if s.ends_with(['.', '_', ':']) {
            return Err(RegistrationIdError::InvalidLastCharacter);
        }
        Ok(Self(s.to_ascii_lowercase()))
    }

    /// The id the Azure TPM clients derive when none is configured: lowercase RFC 4648 base32,
    /// without padding, of SHA-256 over the EK's marshalled `TPM2B_PUBLIC` (52 characters).
    #[must_use]
    pub fn from_endorsement_key(ek_tpm2b_public: &[u8]) -> Self {
        Self(
            BASE32_NOPAD
                .encode(&sha256(&[ek_tpm2b_public]))
                .to_ascii_lowercase(),
        )
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RegistrationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RegistrationId {
    type Err = RegistrationIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}
