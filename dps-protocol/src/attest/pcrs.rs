//! PCRs as JSON carries them: a bank by its hash's name (`"sha256"`), a selection as indices per
//! bank (`{"sha256": [0, 7]}`), values as lowercase hex per bank and index
//! (`{"sha256": {"7": "3d45…"}}`, the form `tpm2_pcrread` prints). The enrollment's
//! `attestationPolicy`, the `401`'s requested selection and the device's reported values all
//! use these shapes (docs/protocol.md §10).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::PcrSelection;
use crate::tpm::constants::{TPM_ALG_SHA1, TPM_ALG_SHA256, TPM_ALG_SHA384, TPM_ALG_SHA512};

/// PCRs a TPM has per bank (`IMPLEMENTATION_PCR` of the PC Client profile).
pub const PCR_COUNT: u8 = 24;

/// A PCR bank, named by its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Bank {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Bank {
    /// The bank's `TPM_ALG_ID`.
    #[must_use]
    pub fn alg(self) -> u16 {
        match self {
            Self::Sha1 => TPM_ALG_SHA1,
            Self::Sha256 => TPM_ALG_SHA256,
            Self::Sha384 => TPM_ALG_SHA384,
            Self::Sha512 => TPM_ALG_SHA512,
        }
    }

    /// The bank of a `TPM_ALG_ID`, if it is one of these.
    #[must_use]
    pub fn from_alg(alg: u16) -> Option<Self> {
        [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|b| b.alg() == alg)
    }

    /// The size of each PCR value in this bank.
    #[must_use]
    pub fn digest_size(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
        }
    }
}

impl std::fmt::Display for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which PCRs to quote: indices per bank.
pub type PcrSelect = BTreeMap<Bank, BTreeSet<u8>>;

/// `select` as the TPM's `TPML_PCR_SELECTION` lists it: banks in [`Bank`] order.
#[must_use]
pub fn to_selection(select: &PcrSelect) -> Vec<PcrSelection> {
    select
        .iter()
        .map(|(bank, pcrs)| PcrSelection {
            bank: bank.alg(),
            pcrs: pcrs.iter().copied().collect(),
        })
        .collect()
}

/// A PCR value, hex on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrDigest(pub Vec<u8>);

impl Serialize for PcrDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for PcrDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(text.as_bytes())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("a PCR value is not hex"))
    }
}

/// PCR values per bank and index.
pub type PcrValues = BTreeMap<Bank, BTreeMap<u8, PcrDigest>>;

/// Why a selection or a set of values is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPcrs {
    #[error("PCR {index} of {bank}: a TPM has PCRs 0 to 23")]
    Index { bank: Bank, index: u8 },
    #[error("PCR {index} of {bank}: a {bank} value is {expected} bytes, not {got}")]
    Length {
        bank: Bank,
        index: u8,
        expected: usize,
        got: usize,
    },
    #[error("bank {0} selects no PCR")]
    EmptyBank(Bank),
}

/// Checks a selection: indices below [`PCR_COUNT`], no bank without a PCR.
pub fn check_select(select: &PcrSelect) -> Result<(), InvalidPcrs> {
    for (&bank, pcrs) in select {
        if pcrs.is_empty() {
            return Err(InvalidPcrs::EmptyBank(bank));
        }
        if let Some(&index) = pcrs.iter().find(|&&i| i >= PCR_COUNT) {
            return Err(InvalidPcrs::Index { bank, index });
        }
    }
    Ok(())
}

/// Checks values: indices below [`PCR_COUNT`], each value its bank's digest size.
pub fn check_values(values: &PcrValues) -> Result<(), InvalidPcrs> {
    for (&bank, pcrs) in values {
        for (&index, value) in pcrs {
            if index >= PCR_COUNT {
                return Err(InvalidPcrs::Index { bank, index });
            }
            if value.0.len() != bank.digest_size() {
                return Err(InvalidPcrs::Length {
                    bank,
                    index,
                    expected: bank.digest_size(),
                    got: value.0.len(),
                });
            }
        }
    }
    Ok(())
}

/// The values of `values` that `select` covers.
#[must_use]
pub fn restrict(values: &PcrValues, select: &PcrSelect) -> PcrValues {
    select
        .iter()
        .map(|(bank, pcrs)| {
            let of_bank = values.get(bank);
            let kept = pcrs
                .iter()
                .filter_map(|i| Some((*i, of_bank?.get(i)?.clone())))
                .collect();
            (*bank, kept)
        })
        .collect()
}
