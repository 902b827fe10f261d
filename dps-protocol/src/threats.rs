//! Attacks considered, and where each is stopped. (Documentation only.)
//!
//! - **A device that copied an enrolled EK_pub but lacks its private key.** The inner wrapping
//!   key is sealed to the EK with `MakeCredential` ([`crate::credential`]); without `EK_priv`,
//!   `ActivateCredential` fails its integrity check, the duplicate cannot be imported, and no
//!   valid SAS can be produced.
//! - **A TPM that holds the EK but presents another SRK.** The credential is bound to the
//!   SRK's name: activating it with any other object loaded fails the integrity HMAC; the
//!   duplicate is encrypted to the SRK named in the request.
//! - **A tampered blob.** Every wrapper carries an HMAC over ciphertext and name, checked by
//!   the TPM (or [`crate::software_tpm`]) before anything is decrypted or imported.
//! - **Oversized or malformed TPM structures.** [`crate::marshal::Reader`] checks each size
//!   against its Part 2 maximum before slicing and refuses trailing bytes; unknown algorithm
//!   selectors are errors, never guesses.
//! - **A replayed, expired or far-future SAS.** [`crate::sas::SasToken::verify`] takes `now`,
//!   a skew window and a maximum lifetime; the signature compare is constant time. Replay
//!   within the lifetime is bounded by the short lifetime and by the service's one-live-key
//!   rule (a re-registration issues a new key).
//! - **Hostile registration ids.** [`crate::RegistrationId::parse`] admits only DPS's alphabet
//!   and length, so ids are safe in paths, logs and queries.
//! - **Weak or odd keys.** [`crate::tpm::Public::seed_key`] admits only restricted decryption
//!   keys with SHA-256 or SHA-384 names and AES-CFB — RSA of at least 2048 bits with exponent
//!   65537, or ECC P-256/P-384 with the point on its curve — i.e. what a TPM will actually use
//!   as a credential target or import parent.
