//! The TPM behind one small door: a few verbs over a `tss-esapi` context.
//!
//! - [`Tpm::endorsement_key`] / [`Tpm::storage_root_key`]: ensure the key exists (create it from
//!   its template and persist it if not) and return its marshalled `TPM2B_PUBLIC`;
//! - [`Tpm::import_authentication_key`]: unwrap a DPS `authenticationKey` blob into the device
//!   key (`ActivateCredential`, Import, Load, `EvictControl`);
//! - [`Tpm::endorsement_key_certificate`]: the manufacturer's EK certificate from NV;
//! - [`Tpm::hmac`]: HMAC-SHA-256 with the persisted device key (also the SAS [`Signer`]);
//! - [`Tpm::attestation_key`] / [`Tpm::answer_attestation`]: the attestation key (made under
//!   the EK and persisted), and the quote that answers the service's attestation challenge.
//!
//! Words: the *device key* is the HMAC key the service issued; the *authenticationKey* is the
//! DPS blob that carries it, which only this TPM can open.
//!
//! Calls are blocking; async callers run them on a blocking thread. Every transient object and
//! session this module creates is flushed before the call returns, success or not: a TPM has
//! only a few slots and swtpm has no resource manager in front of it.

mod attest;
mod certificate_key;
mod context;
mod error;
mod import;
mod keys;
mod leftovers;
mod nv;

use dps_protocol::attest::pcrs::PcrSelect;
use dps_protocol::sas::Signer;
use dps_protocol::tpm::constants::{
    AK_PERSISTENT_HANDLE, CERTIFICATE_KEY_PERSISTENT_HANDLE, DEVICE_KEY_PERSISTENT_HANDLE,
    EK_PERSISTENT_HANDLE, SRK_PERSISTENT_HANDLE,
};
use dps_protocol::tpm::{Tpm2bEncryptedSecret, Tpm2bIdObject};
use dps_protocol::wire::{AttestationChallenge, Base64Bytes, KeyCertification, Quote};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::MaxBuffer;
use tss_esapi::Context;

pub use attest::AkAlgorithm;
pub use context::{tcti_from_env, DEFAULT_TCTI};
pub use error::TpmError;
pub use nv::{EK_CHAIN_INDICES, RSA_EK_CERTIFICATE_INDEX};

/// The largest input of one `TPM2_HMAC` (`MAX_DIGEST_BUFFER`, the size of `TPM2B_MAX_BUFFER`).
pub const MAX_HMAC_INPUT: usize = 1024;

/// Which of the TCG EK templates the device uses (EK Credential Profile 2.5): the one its
/// manufacturer certified. Each has its template, its conventional persistent handle and the NV
/// index of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EkType {
    /// L-1: RSA-2048, SHA-256, AES-128 (what DPS and the Azure clients know).
    #[default]
    Rsa2048,
    /// H-1: RSA-2048, SHA-256, AES-128, PolicyB and userWithAuth.
    Rsa2048High,
    /// L-2: ECC P-256, SHA-256, AES-128.
    EccP256,
    /// H-2: ECC P-256, SHA-256, AES-128, PolicyB and userWithAuth.
    EccP256High,
    /// H-3: ECC P-384, SHA-384, AES-256 (what swtpm_setup makes beside the RSA EK).
    EccP384,
    /// H-6: RSA-3072, SHA-384, AES-256.
    Rsa3072,
}

impl EkType {
    /// Every type, in the order [`Tpm::certified_ek_type`] prefers them: RSA-2048 first (the EK
    /// DPS, the Azure clients and existing enrollments know), then the low range before the high.
    pub const PREFERENCE: [Self; 6] = [
        Self::Rsa2048,
        Self::Rsa2048High,
        Self::EccP256,
        Self::EccP256High,
        Self::EccP384,
        Self::Rsa3072,
    ];

    /// Where the EK is persisted by default: the TCG Provisioning Guidance's 0x81010001 for L-1;
    /// for the high range 0x810100xx after the certificate's NV index 0x01C000xx, as swtpm_setup
    /// persists H-3 at 0x81010016; 0x81010003 for L-2 (0x81010002 holds the attestation key).
    #[must_use]
    pub fn default_handle(self) -> u32 {
        match self {
            Self::Rsa2048 => EK_PERSISTENT_HANDLE,
            Self::EccP256 => 0x8101_0003,
            high => 0x8101_0000 | (high.certificate_index() & 0xFF),
        }
    }

    /// The NV index of this EK's certificate (L-1 0x01C00002, L-2 0x01C0000A, H-1 0x01C00012,
    /// H-2 0x01C00014, H-3 0x01C00016, H-6 0x01C0001C).
    #[must_use]
    pub fn certificate_index(self) -> u32 {
        match self {
            Self::Rsa2048 => RSA_EK_CERTIFICATE_INDEX,
            Self::EccP256 => 0x01C0_000A,
            Self::Rsa2048High => 0x01C0_0012,
            Self::EccP256High => 0x01C0_0014,
            Self::EccP384 => 0x01C0_0016,
            Self::Rsa3072 => 0x01C0_001C,
        }
    }

    /// The template the TPM derives the EK from: the low range's `unique` zero-filled, the high
    /// range's empty (mixing them up derives another key).
    fn template(self) -> dps_protocol::tpm::Public {
        use dps_protocol::tpm::templates::{
            ek_ecc_p256, ek_ecc_p256_high, ek_ecc_p384, ek_rsa2048, ek_rsa2048_high, ek_rsa3072,
        };
        match self {
            Self::Rsa2048 => ek_rsa2048(vec![0; 256]),
            Self::Rsa2048High => ek_rsa2048_high(Vec::new()),
            Self::EccP256 => ek_ecc_p256(vec![0; 32], vec![0; 32]),
            Self::EccP256High => ek_ecc_p256_high(Vec::new(), Vec::new()),
            Self::EccP384 => ek_ecc_p384(Vec::new(), Vec::new()),
            Self::Rsa3072 => ek_rsa3072(Vec::new()),
        }
    }
}

/// The SRK's template, used when the TPM has no SRK yet: an SRK already persisted at its handle
/// is used whatever its type (the service duplicates to RSA and ECC SRKs alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrkType {
    /// RSA-2048, SHA-256, AES-128 (TCG Provisioning Guidance; what the Azure clients make).
    #[default]
    Rsa2048,
    /// ECC P-256, SHA-256, AES-128 (the Guidance's ECC SRK): quicker to create on most TPMs.
    EccP256,
}

impl SrkType {
    fn template(self) -> dps_protocol::tpm::Public {
        use dps_protocol::tpm::templates::{srk_ecc_p256, srk_rsa2048};
        match self {
            Self::Rsa2048 => srk_rsa2048(Vec::new()),
            Self::EccP256 => srk_ecc_p256(Vec::new(), Vec::new()),
        }
    }
}

/// Where each key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handles {
    /// The EK's template (and so its certificate's NV index).
    pub ek_type: EkType,
    pub endorsement_key: u32,
    /// The SRK's template, if one is to be made.
    pub srk_type: SrkType,
    pub storage_root_key: u32,
    pub device_key: u32,
    pub attestation_key: u32,
    pub certificate_key: u32,
}

impl Default for Handles {
    fn default() -> Self {
        Self {
            ek_type: EkType::Rsa2048,
            endorsement_key: EK_PERSISTENT_HANDLE,
            srk_type: SrkType::Rsa2048,
            storage_root_key: SRK_PERSISTENT_HANDLE,
            device_key: DEVICE_KEY_PERSISTENT_HANDLE,
            attestation_key: AK_PERSISTENT_HANDLE,
            certificate_key: CERTIFICATE_KEY_PERSISTENT_HANDLE,
        }
    }
}

impl Handles {
    /// These handles with the EK of `ek_type` at its default handle.
    #[must_use]
    pub fn with_ek_type(self, ek_type: EkType) -> Self {
        Self {
            ek_type,
            endorsement_key: ek_type.default_handle(),
            ..self
        }
    }
}

/// An open TPM.
pub struct Tpm {
    context: Context,
    handles: Handles,
    /// ESYS handles of the persistent EK and SRK, once ensured.
    ek: Option<KeyHandle>,
    srk: Option<KeyHandle>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm")
            .field("handles", &self.handles)
            .finish_non_exhaustive()
    }
}

impl Tpm {
    /// Opens the TPM at `tcti` (for example `device:/dev/tpmrm0`, `tabrmd:` or
    /// `swtpm:host=127.0.0.1,port=2321`) with the default persistent handles.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        Self::open_with_handles(tcti, Handles::default())
    }

    /// Opens the TPM at `tcti` with the given persistent handles.
    /// Where no resource manager isolates clients (swtpm, `/dev/tpm0`), first flushes what a
    /// killed predecessor left loaded (`leftovers`).
    pub fn open_with_handles(tcti: &str, handles: Handles) -> Result<Self, TpmError> {
        let mut context = context::open(tcti)?;
        if leftovers::unshared(tcti) {
            leftovers::flush(&mut context);
        }
        Ok(Self {
            context,
            handles,
            ek: None,
            srk: None,
        })
    }

    /// The EK's `TPM2B_PUBLIC`, creating and persisting it from its type's template if absent.
    pub fn endorsement_key(&mut self) -> Result<Vec<u8>, TpmError> {
        let handle = self.ensure_ek()?;
        keys::read_public_tpm2b(&mut self.context, handle)
    }

    /// The EK type the manufacturer certified: the first of [`EkType::PREFERENCE`] whose
    /// certificate index exists, or `None` if the TPM holds no EK certificate.
    pub fn certified_ek_type(&mut self) -> Result<Option<EkType>, TpmError> {
        for ek_type in EkType::PREFERENCE {
            if nv::exists(&mut self.context, ek_type.certificate_index())? {
                return Ok(Some(ek_type));
            }
        }
        Ok(None)
    }

    /// Uses the EK of `ek_type` at its default handle from now on.
    pub fn use_ek_type(&mut self, ek_type: EkType) -> Result<(), TpmError> {
        self.handles = self.handles.with_ek_type(ek_type);
        match self.ek.take() {
            Some(old) => keys::close(&mut self.context, old.into()),
            None => Ok(()),
        }
    }

    /// The EK certificate the manufacturer stored in NV (at its type's index,
    /// [`EkType::certificate_index`]), as stored; `None` if the TPM has none.
    pub fn endorsement_key_certificate(&mut self) -> Result<Option<Vec<u8>>, TpmError> {
        nv::read(&mut self.context, self.handles.ek_type.certificate_index())
    }

    /// The CA certificates a TPM keeps for its EK certificate's chain (NV indices
    /// [`EK_CHAIN_INDICES`], each as stored); most TPMs keep none.
    pub fn endorsement_key_certificate_chain(&mut self) -> Result<Vec<Vec<u8>>, TpmError> {
        let mut chain = Vec::new();
        for index in nv::chain_indices(&mut self.context)? {
            chain.extend(nv::read(&mut self.context, index)?);
        }
        Ok(chain)
    }

    /// The SRK's `TPM2B_PUBLIC`, creating and persisting one of [`Handles::srk_type`] if absent.
    pub fn storage_root_key(&mut self) -> Result<Vec<u8>, TpmError> {
        let handle = self.ensure_srk()?;
        keys::read_public_tpm2b(&mut self.context, handle)
    }

    /// Imports a DPS `authenticationKey` blob and persists the device key it carries, replacing
    /// any key at the device key handle. Fails, importing nothing, if the blob was not made for this
    /// TPM's EK and SRK or was altered.
    pub fn import_authentication_key(&mut self, blob: &[u8]) -> Result<(), TpmError> {
        let blob = dps_protocol::AuthenticationKey::from_bytes(blob)?;
        let ek = self.ensure_ek()?;
        let srk = self.ensure_srk()?;
        import::import(&mut self.context, ek, srk, &blob, self.handles.device_key)
    }

    /// Whether a key is persisted at the device key handle.
    pub fn has_device_key(&mut self) -> Result<bool, TpmError> {
        match keys::persistent(&mut self.context, self.handles.device_key)? {
            Some(object) => keys::close(&mut self.context, object).map(|()| true),
            None => Ok(false),
        }
    }

    /// HMAC-SHA-256 of `data` with the persisted device key.
    ///
    /// At most [`MAX_HMAC_INPUT`] bytes: longer input needs the HMAC sequence commands, which
    /// tss-esapi 7 does not wrap. SAS strings-to-sign are far shorter.
    pub fn hmac(&mut self, data: &[u8]) -> Result<[u8; 32], TpmError> {
        let command = "HMAC";
        if data.len() > MAX_HMAC_INPUT {
            return Err(TpmError::DataTooLong {
                len: data.len(),
                max: MAX_HMAC_INPUT,
            });
        }
        let handle = keys::persistent(&mut self.context, self.handles.device_key)?.ok_or(
            TpmError::NoDeviceKey {
                handle: self.handles.device_key,
            },
        )?;
        let buffer =
            MaxBuffer::try_from(data.to_vec()).map_err(keys::library("TPM2B_MAX_BUFFER"))?;
        let digest = self
            .context
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.hmac(handle, buffer, HashingAlgorithm::Sha256)
            })
            .map_err(|source| TpmError::Command { command, source });
        keys::close(&mut self.context, handle)?;
        let digest = digest?;
        <[u8; 32]>::try_from(digest.value()).map_err(|_| TpmError::Unexpected {
            what: "HMAC-SHA-256 digest is not 32 bytes",
        })
    }

    /// The attestation key's `TPM2B_PUBLIC`, creating it under the EK and persisting it if
    /// absent: with `algorithm`, or ECDSA P-256 where the TPM has the curve, else RSA-2048.
    pub fn attestation_key(&mut self, algorithm: Option<AkAlgorithm>) -> Result<Vec<u8>, TpmError> {
        let ek = self.ensure_ek()?;
        let algorithm = match algorithm {
            Some(a) => a,
            None => attest::choose_algorithm(&mut self.context)?,
        };
        let ak = attest::ensure_attestation_key(
            &mut self.context,
            ek,
            self.handles.attestation_key,
            algorithm,
        )?;
        let public = keys::read_public_tpm2b(&mut self.context, ak);
        keys::close(&mut self.context, ak.into())?;
        public
    }

    /// Answers an attestation challenge: activates its credential with the attestation key
    /// (which only this TPM, holding the EK and that key, can do), and quotes the requested
    /// PCRs with the nonce it carried. Refuses, quoting nothing, a bank the TPM has not
    /// allocated.
    pub fn answer_attestation(
        &mut self,
        challenge: &AttestationChallenge,
    ) -> Result<Quote, TpmError> {
        self.check_banks(challenge)?;
        self.with_nonce(challenge, |tpm, ak, nonce| {
            tpm.quote_with(ak, nonce, &challenge.pcr_selection)
        })
    }

    /// Answers an attestation challenge for a certificate: as [`Tpm::answer_attestation`]
    /// (no quote when the challenge selects no PCR), and the certification of the certificate
    /// key by the attestation key over the same nonce.
    pub fn answer_with_certification(
        &mut self,
        challenge: &AttestationChallenge,
    ) -> Result<(Option<Quote>, KeyCertification), TpmError> {
        self.check_banks(challenge)?;
        let handle = self.handles.certificate_key;
        let key = keys::persistent(&mut self.context, handle)?
            .map(KeyHandle::from)
            .ok_or(TpmError::NoCertificateKey { handle })?;
        let answered = self.with_nonce(challenge, |tpm, ak, nonce| {
            let quote = if challenge.pcr_selection.is_empty() {
                None
            } else {
                Some(tpm.quote_with(ak, nonce, &challenge.pcr_selection)?)
            };
            let (attest, signature) = certificate_key::certify(&mut tpm.context, key, ak, nonce)?;
            let public = keys::read_public_tpm2b(&mut tpm.context, key)?;
            Ok((
                quote,
                KeyCertification {
                    public: Base64Bytes(public),
                    attest: Base64Bytes(attest),
                    signature: Base64Bytes(signature),
                },
            ))
        });
        keys::close(&mut self.context, key.into())?;
        answered
    }

    /// Refuses a challenge that selects a bank the TPM has not allocated.
    fn check_banks(&mut self, challenge: &AttestationChallenge) -> Result<(), TpmError> {
        let allocated = attest::allocated_banks(&mut self.context)?;
        if let Some(bank) = challenge
            .pcr_selection
            .keys()
            .find(|b| !allocated.contains(b))
        {
            let names: Vec<&str> = allocated.iter().map(|b| b.name()).collect();
            return Err(TpmError::BankNotAllocated {
                bank: bank.name().to_owned(),
                allocated: names.join(", "),
            });
        }
        Ok(())
    }

    /// Activates `challenge`'s credential with the attestation key and runs `then` with the
    /// key and the nonce it carried.
    fn with_nonce<T>(
        &mut self,
        challenge: &AttestationChallenge,
        then: impl FnOnce(&mut Self, KeyHandle, &[u8]) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let credential_blob = Tpm2bIdObject::from_tpm2b(&challenge.credential_blob.0)?;
        let secret = Tpm2bEncryptedSecret::from_tpm2b(&challenge.encrypted_secret.0)?;
        let ek = self.ensure_ek()?;
        let handle = self.handles.attestation_key;
        let ak = keys::persistent(&mut self.context, handle)?
            .map(KeyHandle::from)
            .ok_or(TpmError::NoAttestationKey { handle })?;
        let answered = (|| {
            let nonce =
                import::activate_credential(&mut self.context, ek, ak, &credential_blob, &secret)?;
            then(self, ak, nonce.value())
        })();
        keys::close(&mut self.context, ak.into())?;
        answered
    }

    /// The certificate key's `TPM2B_PUBLIC`, creating it under the SRK and persisting it if
    /// absent: ECDSA P-384 where the TPM lists the curve (the key DPS issues for), else P-256.
    pub fn certificate_key(&mut self) -> Result<Vec<u8>, TpmError> {
        let srk = self.ensure_srk()?;
        let p384 = attest::has_p384(&mut self.context)?;
        let key = certificate_key::ensure_certificate_key(
            &mut self.context,
            srk,
            self.handles.certificate_key,
            p384,
        )?;
        let public = keys::read_public_tpm2b(&mut self.context, key);
        keys::close(&mut self.context, key.into())?;
        public
    }

    /// The certificate key's signature over `digest` (the hash of its scheme: SHA-384 for a
    /// P-384 key, SHA-256 for P-256), as `TPMT_SIGNATURE` bytes.
    pub fn sign_with_certificate_key(&mut self, digest: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.with_certificate_key(|context, key| certificate_key::sign(context, key, digest))
    }

    /// The persisted certificate key's `TPM2B_PUBLIC`; unlike [`Tpm::certificate_key`] it makes
    /// none (`NoCertificateKey` when absent).
    pub fn certificate_key_public(&mut self) -> Result<Vec<u8>, TpmError> {
        self.with_certificate_key(keys::read_public_tpm2b)
    }

    fn with_certificate_key<T>(
        &mut self,
        then: impl FnOnce(&mut Context, KeyHandle) -> Result<T, TpmError>,
    ) -> Result<T, TpmError> {
        let handle = self.handles.certificate_key;
        let key = keys::persistent(&mut self.context, handle)?
            .map(KeyHandle::from)
            .ok_or(TpmError::NoCertificateKey { handle })?;
        let done = then(&mut self.context, key);
        keys::close(&mut self.context, key.into())?;
        done
    }

    /// Quotes `select` with the persisted attestation key and `nonce` as qualifying data (what
    /// `tpm2_quote` does), with the values read. Unlike [`Tpm::answer_attestation`] it quotes
    /// a bank the TPM has not allocated as the TPM does: empty, with no values.
    pub fn quote(&mut self, nonce: &[u8], select: &PcrSelect) -> Result<Quote, TpmError> {
        let handle = self.handles.attestation_key;
        let ak = keys::persistent(&mut self.context, handle)?
            .map(KeyHandle::from)
            .ok_or(TpmError::NoAttestationKey { handle })?;
        let quoted = self.quote_with(ak, nonce, select);
        keys::close(&mut self.context, ak.into())?;
        quoted
    }

    /// Quotes `select` with the attestation key at `ak` and `nonce`, with the values read.
    fn quote_with(
        &mut self,
        ak: KeyHandle,
        nonce: &[u8],
        select: &PcrSelect,
    ) -> Result<Quote, TpmError> {
        let pcrs = attest::read_pcrs(&mut self.context, select)?;
        let (attest, signature) = attest::quote(&mut self.context, ak, nonce, select)?;
        Ok(Quote {
            attest: Base64Bytes(attest),
            signature: Base64Bytes(signature),
            pcrs,
        })
    }

    fn ensure_ek(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some(handle) = self.ek {
            return Ok(handle);
        }
        let handle = keys::ensure_endorsement_key(
            &mut self.context,
            self.handles.endorsement_key,
            &self.handles.ek_type.template(),
        )?;
        self.ek = Some(handle);
        Ok(handle)
    }

    fn ensure_srk(&mut self) -> Result<KeyHandle, TpmError> {
        if let Some(handle) = self.srk {
            return Ok(handle);
        }
        let handle = keys::ensure_storage_root_key(
            &mut self.context,
            self.handles.storage_root_key,
            &self.handles.srk_type.template(),
        )?;
        self.srk = Some(handle);
        Ok(handle)
    }
}

impl Signer for Tpm {
    type Error = TpmError;
    fn sign(&mut self, data: &[u8]) -> Result<[u8; 32], TpmError> {
        self.hmac(data)
    }
}
