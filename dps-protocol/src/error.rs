//! Error types of the crate, one enum per concern.

/// A TPM structure (or the blob made of them) could not be decoded.
///
/// Every variant names the structure so a caller can report which part of the input was bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure did.
    #[error("{structure}: input ends after {available} bytes, {needed} needed")]
    Truncated {
        structure: &'static str,
        needed: usize,
        available: usize,
    },
    /// A size prefix is larger than the TPM 2.0 Part 2 maximum for that structure.
    #[error("{structure}: size {got} exceeds the maximum of {max}")]
    SizeTooLarge {
        structure: &'static str,
        max: usize,
        got: usize,
    },
    /// Bytes remain after the structure was fully read.
    #[error("{structure}: {len} trailing bytes")]
    TrailingData { structure: &'static str, len: usize },
    /// An algorithm selector this crate cannot parse (the layout that follows depends on it).
    #[error("{structure}: unsupported {field} algorithm 0x{value:04x}")]
    UnsupportedAlgorithm {
        structure: &'static str,
        field: &'static str,
        value: u16,
    },
    /// A field holds a value the protocol does not allow.
    #[error("{structure}: invalid {field}: {reason}")]
    InvalidValue {
        structure: &'static str,
        field: &'static str,
        reason: &'static str,
    },
}

/// A cryptographic step failed: a key was unusable, or an integrity check did not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The key is not of the kind this step needs (for example an ECC EK, or a signing key given
    /// as the SRK).
    #[error("{role} key is unsuitable: {reason}")]
    UnsuitableKey {
        role: &'static str,
        reason: &'static str,
    },
    /// The RSA modulus or exponent could not be turned into a usable public key.
    #[error("{role} key is not a valid RSA public key")]
    InvalidRsaKey { role: &'static str },
    /// RSA-OAEP encryption or decryption failed.
    #[error("RSA-OAEP {operation} failed")]
    Oaep { operation: &'static str },
    /// An HMAC did not match: the data was altered, or it was made for another key or name.
    #[error("{structure}: integrity check failed")]
    IntegrityCheck { structure: &'static str },
    /// The structure was decrypted but does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A SAS token was malformed or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasError {
    /// The token does not start with `SharedAccessSignature `.
    #[error("token does not start with \"SharedAccessSignature \"")]
    MissingScheme,
    /// A field is missing, repeated, unknown or not `key=value`.
    #[error("malformed token field {field}")]
    MalformedField { field: &'static str },
    /// `sig` is not base64 of a 32-byte HMAC-SHA256.
    #[error("signature is not base64 of an HMAC-SHA256")]
    MalformedSignature,
    /// `se` is not a decimal Unix time.
    #[error("expiry is not a Unix time")]
    MalformedExpiry,
    /// `sr` names another resource than the one being accessed.
    #[error("token is for another resource")]
    ResourceMismatch,
    /// `skn` names another key than the one expected.
    #[error("token names another key")]
    KeyNameMismatch,
    /// `se` is in the past (beyond the allowed clock skew).
    #[error("token expired")]
    Expired,
    /// `se` is further in the future than the service accepts.
    #[error("token expiry is too far in the future")]
    ExpiryTooFar,
    /// The signature does not match.
    #[error("signature does not match")]
    InvalidSignature,
}

/// A registration id breaks the DPS rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationIdError {
    #[error("registration id is empty")]
    Empty,
    #[error("registration id is {len} characters long, the maximum is {max}")]
    TooLong { len: usize, max: usize },
    #[error("registration id contains {0:?}; allowed are a-z, 0-9, '-', '.', '_' and ':'")]
    InvalidCharacter(char),
    #[error("registration id must end with a letter, digit or '-'")]
    InvalidLastCharacter,
}
