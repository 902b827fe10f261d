//! The EK certificates as the TPM manufacturer stored them in NV (TCG EK Credential Profile 2.5:
//! one index per EK template, the RSA-2048 one at 0x01C00002; [`super::EkType`] lists them).

use tss_esapi::abstraction::nv;
use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::NvIndexTpmHandle;
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;

use super::keys::library;
use super::TpmError;

/// The NV index of the RSA-2048 EK certificate.
pub const RSA_EK_CERTIFICATE_INDEX: u32 = 0x01C0_0002;

/// The NV range where a TPM may keep the CA certificates of its EK certificate's chain, one per
/// index (TCG EK Credential Profile 2.5, "EK Certificate Chain": 0x01C00100–0x01C001FF).
pub const EK_CHAIN_INDICES: std::ops::RangeInclusive<u32> = 0x01C0_0100..=0x01C0_01FF;

/// The NV indices of [`EK_CHAIN_INDICES`] that exist, in order.
pub(super) fn chain_indices(ctx: &mut Context) -> Result<Vec<u32>, TpmError> {
    let (start, end) = (*EK_CHAIN_INDICES.start(), *EK_CHAIN_INDICES.end());
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, start, end - start + 1)
        .map_err(|source| TpmError::Command {
            command: "GetCapability",
            source,
        })?;
    Ok(match data {
        CapabilityData::Handles(list) => list
            .into_inner()
            .into_iter()
            .map(u32::from)
            .filter(|h| EK_CHAIN_INDICES.contains(h))
            .collect(),
        _ => Vec::new(),
    })
}

/// Whether the TPM has NV index `index` (asked with `GetCapability`, so a missing index is an
/// answer rather than a logged TPM error).
pub(super) fn exists(ctx: &mut Context, index: u32) -> Result<bool, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, index, 1)
        .map_err(|source| TpmError::Command {
            command: "GetCapability",
            source,
        })?;
    Ok(matches!(data, CapabilityData::Handles(list)
        if list.first().is_some_and(|h| u32::from(*h) == index)))
}

/// The contents of NV index `index` as stored (the certificate's DER, perhaps with a TCG header
/// or fill; the service trims them), or `None` if the TPM has no such index.
pub(super) fn read(ctx: &mut Context, index: u32) -> Result<Option<Vec<u8>>, TpmError> {
    if !exists(ctx, index)? {
        return Ok(None);
    }
    let handle = NvIndexTpmHandle::new(index).map_err(library("NV index handle"))?;
    // EK certificate indices are readable with the owner's (empty) authorization.
    ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        nv::read_full(ctx, NvAuth::Owner, handle)
    })
    .map(Some)
    .map_err(|source| TpmError::Command {
        command: "NV_Read",
        source,
    })
}
