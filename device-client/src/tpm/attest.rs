//! The attestation key and the quote (docs/protocol.md §10): an AK made under the EK
//! (tss-esapi's `abstraction::ak`, TCG's restricted signing template), persisted; the
//! attestation challenge activated with it; the requested PCRs read and quoted with the nonce
//! as qualifying data.

use std::collections::BTreeSet;

use dps_protocol::attest::pcrs::{Bank, PcrDigest, PcrSelect, PcrValues};
use tss_esapi::abstraction::{ak, pcr, AsymmetricAlgorithmSelection};
use tss_esapi::constants::{CapabilityType, EccCurveIdentifier};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    CapabilityData, Data, PcrSelectionList, PcrSelectionListBuilder, PcrSlot, SignatureScheme,
};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::keys::{command, ensure_persisted, library};
use super::TpmError;

/// The attestation key's algorithm. ECDSA P-256/SHA-256 where the TPM has the curve (most do),
/// else RSASSA-2048/SHA-256, which every TPM 2.0 has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AkAlgorithm {
    EcdsaP256,
    EcdsaP384,
    Rsa2048,
}

impl AkAlgorithm {
    fn parameters(
        self,
    ) -> (
        HashingAlgorithm,
        AsymmetricAlgorithmSelection,
        SignatureSchemeAlgorithm,
    ) {
        match self {
            Self::EcdsaP256 => (
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            Self::EcdsaP384 => (
                HashingAlgorithm::Sha384,
                AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
                SignatureSchemeAlgorithm::EcDsa,
            ),
            Self::Rsa2048 => (
                HashingAlgorithm::Sha256,
                AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                SignatureSchemeAlgorithm::RsaSsa,
            ),
        }
    }
}

/// The ECC curves the TPM implements (`TPM2_GetCapability(TPM_CAP_ECC_CURVES)`).
fn ecc_curves(ctx: &mut Context) -> Result<Vec<EccCurveIdentifier>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::EccCurves, 0, 16)
        .map_err(command("GetCapability"))?;
    Ok(match data {
        CapabilityData::EccCurves(list) => list.into_inner(),
        _ => Vec::new(),
    })
}

/// Whether the TPM implements NIST P-384.
pub(super) fn has_p384(ctx: &mut Context) -> Result<bool, TpmError> {
    Ok(ecc_curves(ctx)?.contains(&EccCurveIdentifier::NistP384))
}

/// The algorithm to make an AK with on this TPM.
pub(super) fn choose_algorithm(ctx: &mut Context) -> Result<AkAlgorithm, TpmError> {
    Ok(
        if ecc_curves(ctx)?.contains(&EccCurveIdentifier::NistP256) {
            AkAlgorithm::EcdsaP256
        } else {
            AkAlgorithm::Rsa2048
        },
    )
}

/// The AK at `handle`, creating it under `ek` (and persisting it there) if absent.
pub(super) fn ensure_attestation_key(
    ctx: &mut Context,
    ek: KeyHandle,
    handle: u32,
    algorithm: AkAlgorithm,
) -> Result<KeyHandle, TpmError> {
    ensure_persisted(ctx, handle, |ctx| {
        tracing::info!(
            handle = format_args!("0x{handle:08x}"),
            ?algorithm,
            "creating the attestation key"
        );
        let (hash, key, scheme) = algorithm.parameters();
        let created =
            ak::create_ak_2(ctx, ek, hash, key, scheme, None, None).map_err(command("Create"))?;
        ak::load_ak(ctx, ek, None, created.out_private, created.out_public).map_err(command("Load"))
    })
}

/// The PCR banks the TPM has allocated (`TPM2_GetCapability(TPM_CAP_PCRS)`): a bank listed
/// with no PCR selected is not allocated.
pub(super) fn allocated_banks(ctx: &mut Context) -> Result<BTreeSet<Bank>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::AssignedPcr, 0, 16)
        .map_err(command("GetCapability"))?;
    let CapabilityData::AssignedPcr(list) = data else {
        return Ok(BTreeSet::new());
    };
    Ok(list
        .get_selections()
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| Bank::from_alg(u16::from(s.hashing_algorithm())))
        .collect())
}

fn hashing_algorithm(bank: Bank) -> HashingAlgorithm {
    match bank {
        Bank::Sha1 => HashingAlgorithm::Sha1,
        Bank::Sha256 => HashingAlgorithm::Sha256,
        Bank::Sha384 => HashingAlgorithm::Sha384,
        Bank::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn selection_list(select: &PcrSelect) -> Result<PcrSelectionList, TpmError> {
    let mut builder = PcrSelectionListBuilder::new();
    for (bank, indices) in select {
        let slots = indices
            .iter()
            .map(|i| PcrSlot::try_from(1u32 << i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(library("PCR slot"))?;
        builder = builder.with_selection(hashing_algorithm(*bank), &slots);
    }
    builder.build().map_err(library("PCR selection"))
}

/// The values of the PCRs in `select`, for the banks the TPM has allocated (`PCR_Read` answers
/// nothing for another bank, and tss-esapi's `read_all` would ask again forever).
pub(super) fn read_pcrs(ctx: &mut Context, select: &PcrSelect) -> Result<PcrValues, TpmError> {
    let allocated = allocated_banks(ctx)?;
    let select: PcrSelect = select
        .iter()
        .filter(|(bank, _)| allocated.contains(bank))
        .map(|(bank, indices)| (*bank, indices.clone()))
        .collect();
    let mut values = PcrValues::new();
    if select.is_empty() {
        return Ok(values);
    }
    let data = pcr::read_all(ctx, selection_list(&select)?).map_err(command("PCR_Read"))?;
    for (bank, indices) in &select {
        let of_bank = data
            .pcr_bank(hashing_algorithm(*bank))
            .ok_or(TpmError::Unexpected {
                what: "PCR_Read returned no value of a requested bank",
            })?;
        let mut read = std::collections::BTreeMap::new();
        for &index in indices {
            let slot = PcrSlot::try_from(1u32 << index).map_err(library("PCR slot"))?;
            let digest = of_bank.get_digest(slot).ok_or(TpmError::Unexpected {
                what: "PCR_Read returned no value of a requested PCR",
            })?;
            read.insert(index, PcrDigest(digest.value().to_vec()));
        }
        values.insert(*bank, read);
    }
    Ok(values)
}

/// `TPM2_Quote` of `select` by the AK with `nonce`: the `TPMS_ATTEST` and `TPMT_SIGNATURE`
/// bytes. The AK's own scheme signs (a restricted key has exactly one).
pub(super) fn quote(
    ctx: &mut Context,
    ak: KeyHandle,
    nonce: &[u8],
    select: &PcrSelect,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let qualifying = Data::try_from(nonce.to_vec()).map_err(library("qualifying data"))?;
    let selection = selection_list(select)?;
    let (attest, signature) = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.quote(ak, qualifying, SignatureScheme::Null, selection)
        })
        .map_err(command("Quote"))?;
    Ok((
        attest
            .marshall()
            .map_err(library("TPMS_ATTEST marshalling"))?,
        signature
            .marshall()
            .map_err(library("TPMT_SIGNATURE marshalling"))?,
    ))
}
