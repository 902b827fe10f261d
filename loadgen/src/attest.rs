//! A software device's attestation key: ECDSA P-256 in memory (`ring`), the TCG AK template
//! (`dps_protocol::tpm::templates::ak_ecdsa_p256`), activation through the software EK, and a
//! quote marshalled as a TPM marshals it (`Attest::to_bytes`, held to swtpm's quote in
//! dps-protocol's tests). Its PCRs are all zero, as a bare swtpm's are. Not a TPM: it lets the
//! load generator measure what attestation costs the service.

use dps_protocol::attest::pcrs::{to_selection, PcrDigest, PcrSelect, PcrValues};
use dps_protocol::attest::{
    Attest, Attested, ClockInfo, Signature, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE,
};
use dps_protocol::crypto::sha256;
use dps_protocol::software_tpm::SoftwareTpm;
use dps_protocol::tpm::constants::TPM_ALG_SHA256;
use dps_protocol::tpm::templates::ak_ecdsa_p256;
use dps_protocol::tpm::{Name, Tpm2bEncryptedSecret, Tpm2bIdObject};
use dps_protocol::wire::{AttestationChallenge, Base64Bytes, Quote};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// An attestation key held in memory.
pub struct SoftAk {
    pair: EcdsaKeyPair,
    name: Name,
    /// Its `TPM2B_PUBLIC`, as shown with the challenge request.
    pub public: Vec<u8>,
}

impl SoftAk {
    pub fn generate(rng: &SystemRandom) -> anyhow::Result<Self> {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, rng)
            .map_err(|_| anyhow::anyhow!("generating an ECDSA P-256 key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), rng)
            .map_err(|e| anyhow::anyhow!("reading the ECDSA P-256 key: {e}"))?;
        // An uncompressed point: 0x04 ‖ x ‖ y.
        let point = pair.public_key().as_ref();
        let public = ak_ecdsa_p256(point[1..33].to_vec(), point[33..].to_vec());
        Ok(Self {
            name: Name::of(&public)?,
            public: public.to_tpm2b(),
            pair,
        })
    }

    /// Activates `challenge`'s credential with `tpm`'s EK and this key's name, and quotes the
    /// selection with the nonce it carried.
    pub fn answer(
        &self,
        tpm: &SoftwareTpm,
        challenge: &AttestationChallenge,
    ) -> Result<Quote, &'static str> {
        let id_object = Tpm2bIdObject::from_tpm2b(&challenge.credential_blob.0)
            .map_err(|_| "the credential blob does not parse")?;
        let secret = Tpm2bEncryptedSecret::from_tpm2b(&challenge.encrypted_secret.0)
            .map_err(|_| "the encrypted secret does not parse")?;
        let nonce = tpm
            .activate_credential_for(&self.name, &id_object, &secret)
            .map_err(|_| "the software EK refused the attestation credential")?;
        let pcrs = zero_pcrs(&challenge.pcr_selection);
        let concatenated: Vec<u8> = pcrs
            .values()
            .flat_map(|b| b.values())
            .flat_map(|v| v.0.clone())
            .collect();
        let attest = Attest {
            magic: TPM_GENERATED_VALUE,
            kind: TPM_ST_ATTEST_QUOTE,
            qualified_signer: self.name.as_bytes().to_vec(),
            extra_data: nonce.to_vec(),
            clock_info: ClockInfo {
                clock: 1,
                reset_count: 0,
                restart_count: 0,
                safe: true,
            },
            firmware_version: 0,
            attested: Attested::Quote {
                pcr_select: to_selection(&challenge.pcr_selection),
                pcr_digest: sha256(&[&concatenated]).to_vec(),
            },
        }
        .to_bytes();
        let signed = self
            .pair
            .sign(&SystemRandom::new(), &attest)
            .map_err(|_| "signing failed")?;
        let (r, s) = signed.as_ref().split_at(32);
        let signature = Signature::Ecdsa {
            hash: TPM_ALG_SHA256,
            r: r.to_vec(),
            s: s.to_vec(),
        };
        Ok(Quote {
            attest: Base64Bytes(attest),
            signature: Base64Bytes(signature.to_bytes()),
            pcrs,
        })
    }
}

/// Every selected PCR at zero.
fn zero_pcrs(select: &PcrSelect) -> PcrValues {
    select
        .iter()
        .map(|(bank, indices)| {
            let values = indices
                .iter()
                .map(|i| (*i, PcrDigest(vec![0; bank.digest_size()])))
                .collect();
            (*bank, values)
        })
        .collect()
}
