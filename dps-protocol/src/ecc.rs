//! ECC secret sharing (TPM 2.0 Part 1, "Secret Sharing" for ECC; the reference implementation's
//! `CryptSecretEncrypt`): how a seed reaches an ECC key, as `MakeCredential` sends it to an ECC
//! EK. An ephemeral key on the EK's curve; `Z` = x of `d_e · Q_EK`; the seed is
//! `KDFe(nameAlg, Z, label, x_e, x_EK)` of the nameAlg's digest size; the secret sent is the
//! ephemeral point as a `TPMS_ECC_POINT`. The TPM hashes `x_e` exactly as sent and the EK's x
//! exactly as in its public area, so the coordinates are written at the curve's full size and
//! the EK's x is taken as the device sent it.
//!
//! The curve arithmetic is `aws-lc-rs`'s (already the service's signature library): its P-256
//! and P-384 are several times faster than the pure-Rust crates' (`cargo bench -p dps-protocol
//! --bench crypto -- make_credential`), and it checks the EK's point is on its curve before
//! any secret is derived from it. The ephemeral scalar is drawn from the caller's RNG, so
//! vectors are reproducible.

use aws_lc_rs::agreement::{self, Algorithm, ParsedPublicKey, PrivateKey, UnparsedPublicKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::kdf::{kdfe, NameHash};
use crate::marshal::{put_tpm2b, Reader};

/// `TPM_ECC_NIST_P256` (Part 2, `TPM_ECC_CURVE`).
pub const TPM_ECC_NIST_P256: u16 = 0x0003;
/// `TPM_ECC_NIST_P384`.
pub const TPM_ECC_NIST_P384: u16 = 0x0004;

/// The curves an EK may use here: those of the TCG EK templates L-2/H-2 (P-256) and H-3 (P-384).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EccCurve {
    P256,
    P384,
}

impl EccCurve {
    /// The curve a `TPM_ECC_CURVE` names, if it is one of these.
    #[must_use]
    pub fn from_tpm(curve_id: u16) -> Option<Self> {
        match curve_id {
            TPM_ECC_NIST_P256 => Some(Self::P256),
            TPM_ECC_NIST_P384 => Some(Self::P384),
            _ => None,
        }
    }

    /// Its `TPM_ECC_CURVE`.
    #[must_use]
    pub fn tpm_id(self) -> u16 {
        match self {
            Self::P256 => TPM_ECC_NIST_P256,
            Self::P384 => TPM_ECC_NIST_P384,
        }
    }

    /// Bytes per coordinate.
    #[must_use]
    pub fn size(self) -> usize {
        match self {
            Self::P256 => 32,
            Self::P384 => 48,
        }
    }

    fn ecdh(self) -> &'static Algorithm {
        match self {
            Self::P256 => &agreement::ECDH_P256,
            Self::P384 => &agreement::ECDH_P384,
        }
    }
}

/// A public point on `curve`, checked: coordinates no longer than the curve's size, on the
/// curve, not the identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EccPoint {
    pub curve: EccCurve,
    /// The coordinates as the key's public area carries them.
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

/// `0x04 || x || y` with both coordinates left-padded to `size`; `None` if one is longer.
fn sec1(x: &[u8], y: &[u8], size: usize) -> Option<Vec<u8>> {
    if x.len() > size || y.len() > size {
        return None;
    }
    let mut out = Vec::with_capacity(1 + 2 * size);
    out.push(0x04);
    out.resize(1 + size - x.len(), 0);
    out.extend_from_slice(x);
    out.resize(1 + 2 * size - y.len(), 0);
    out.extend_from_slice(y);
    Some(out)
}

impl EccPoint {
    /// The point of a key's public area, checked; `role` names the key in errors.
    pub fn new(curve_id: u16, x: &[u8], y: &[u8], role: &'static str) -> Result<Self, CryptoError> {
        let unsuitable = |reason| CryptoError::UnsuitableKey { role, reason };
        let curve = EccCurve::from_tpm(curve_id)
            .ok_or_else(|| unsuitable("ECC curve is not NIST P-256 or P-384"))?;
        let encoded = sec1(x, y, curve.size())
            .ok_or_else(|| unsuitable("ECC coordinate longer than the curve's"))?;
        if ParsedPublicKey::try_from(&UnparsedPublicKey::new(curve.ecdh(), &encoded)).is_err() {
            return Err(unsuitable("ECC point is not on its curve"));
        }
        Ok(Self {
            curve,
            x: x.to_vec(),
            y: y.to_vec(),
        })
    }

    /// A fresh seed for this key and the secret that carries it: (seed of `hash`'s size, the
    /// marshalled `TPMS_ECC_POINT` of the ephemeral key). `label` includes its NUL.
    pub(crate) fn share_seed(
        &self,
        hash: NameHash,
        label: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
        let ephemeral = EccPrivateKey::generate(self.curve, rng)?;
        let z = ephemeral.agree(&self.x, &self.y, "ECC key")?;
        let (ex, ey) = (&ephemeral.point.x, &ephemeral.point.y);
        let seed = kdfe(hash, &z, label, ex, &self.x, hash.size());
        let mut secret = Vec::with_capacity(4 + ex.len() + ey.len());
        put_tpm2b(&mut secret, ex);
        put_tpm2b(&mut secret, ey);
        Ok((seed, secret))
    }
}

/// An ECC private key held in memory: the ephemeral key of each secret sent to an ECC key, and
/// the software device model's ECC EK or SRK.
pub struct EccPrivateKey {
    /// aws-lc-rs's key (its memory is cleansed when dropped).
    private: PrivateKey,
    point: EccPoint,
}

impl std::fmt::Debug for EccPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EccPrivateKey")
            .field("point", &self.point)
            .finish_non_exhaustive()
    }
}

impl EccPrivateKey {
    /// The key with this big-endian scalar (the curve's size), if it is in [1, n-1].
    #[must_use]
    pub fn from_scalar(curve: EccCurve, scalar: &[u8]) -> Option<Self> {
        let private = PrivateKey::from_private_key(curve.ecdh(), scalar).ok()?;
        let public = private.compute_public_key().ok()?;
        let encoded = public.as_ref();
        let size = curve.size();
        let point = EccPoint {
            curve,
            x: encoded.get(1..=size)?.to_vec(),
            y: encoded.get(1 + size..)?.to_vec(),
        };
        Some(Self { private, point })
    }

    /// A fresh key from `rng`: a scalar in [1, n-1] (a draw outside, all but impossible on
    /// these curves, is redrawn; an RNG that never gives one is an error, not a hang).
    pub fn generate(curve: EccCurve, rng: &mut impl CryptoRngCore) -> Result<Self, CryptoError> {
        let mut scalar = Zeroizing::new(vec![0u8; curve.size()]);
        (0..64)
            .find_map(|_| {
                rng.fill_bytes(&mut scalar);
                Self::from_scalar(curve, &scalar)
            })
            .ok_or(CryptoError::UnsuitableKey {
                role: "new ECC key",
                reason: "the RNG gave no scalar in range",
            })
    }

    /// ECDH with the point (`x`, `y`) of `role`: Z, the shared point's x.
    fn agree(
        &self,
        x: &[u8],
        y: &[u8],
        role: &'static str,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let invalid = || CryptoError::UnsuitableKey {
            role,
            reason: "ECC point is not on its curve",
        };
        let peer = sec1(x, y, self.point.curve.size()).ok_or_else(invalid)?;
        agreement::agree(
            &self.private,
            UnparsedPublicKey::new(self.point.curve.ecdh(), &peer),
            (),
            |z| Ok(Zeroizing::new(z.to_vec())),
        )
        .map_err(|()| invalid())
    }

    /// Its public point, coordinates at the curve's size.
    #[must_use]
    pub fn point(&self) -> &EccPoint {
        &self.point
    }

    /// The receiving side of [`EccPoint::share_seed`], as `ActivateCredential` and `Import`
    /// recover it: the seed from the `TPMS_ECC_POINT` in `secret`.
    pub fn recover_seed(
        &self,
        hash: NameHash,
        label: &[u8],
        secret: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        const STRUCTURE: &str = "TPMS_ECC_POINT";
        let mut r = Reader::new(secret);
        let ex = r.tpm2b(STRUCTURE, self.point.curve.size())?;
        let ey = r.tpm2b(STRUCTURE, self.point.curve.size())?;
        r.finish(STRUCTURE)?;
        let z = self.agree(ex, ey, "ephemeral ECC key")?;
        Ok(kdfe(hash, &z, label, ex, &self.point.x, hash.size()))
    }
}
