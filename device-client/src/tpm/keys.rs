//! The EK and SRK: found at their persistent handles, or created from their templates and
//! persisted there.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::{Hierarchy, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Public, PublicBuffer};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;

use super::TpmError;

/// A library-side failure (no TPM command was sent) named by what was being done.
pub(super) fn library(operation: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Library { operation, source }
}

/// A TPM command's failure, named by the command.
pub(super) fn command(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Command { command, source }
}

pub(super) fn persistent_handle(handle: u32) -> Result<PersistentTpmHandle, TpmError> {
    PersistentTpmHandle::new(handle).map_err(library("persistent handle"))
}

/// The ESYS object for a persistent handle, or `None` if nothing is persisted there. Asks
/// `GetCapability` first, so a missing key is an answer rather than a logged TPM error. The
/// caller closes the returned object when done with it (`tr_close`).
pub(super) fn persistent(ctx: &mut Context, handle: u32) -> Result<Option<ObjectHandle>, TpmError> {
    let (data, _) = ctx
        .get_capability(CapabilityType::Handles, handle, 1)
        .map_err(|source| TpmError::Command {
            command: "GetCapability",
            source,
        })?;
    let present = matches!(data, CapabilityData::Handles(list)
        if list.first().is_some_and(|h| u32::from(*h) == handle));
    if !present {
        return Ok(None);
    }
    ctx.tr_from_tpm_public(TpmHandle::Persistent(persistent_handle(handle)?))
        .map(Some)
        .map_err(|source| TpmError::Command {
            command: "ReadPublic",
            source,
        })
}

/// The key persisted at `handle`; if none is, `create` makes and loads one (a transient key),
/// which is persisted there and flushed. For keys made with `Create` under a parent (the
/// attestation key, the certificate key).
pub(super) fn ensure_persisted(
    ctx: &mut Context,
    handle: u32,
    create: impl FnOnce(&mut Context) -> Result<KeyHandle, TpmError>,
) -> Result<KeyHandle, TpmError> {
    if let Some(object) = persistent(ctx, handle)? {
        return Ok(KeyHandle::from(object));
    }
    let loaded = create(ctx)?;
    super::import::persist_loaded(ctx, loaded, handle)?;
    persistent(ctx, handle)?
        .map(KeyHandle::from)
        .ok_or(TpmError::Unexpected {
            what: "a key just persisted is not at its handle",
        })
}

/// Closes an ESYS object made by [`persistent`] (the TPM object itself stays).
pub(super) fn close(ctx: &mut Context, mut object: ObjectHandle) -> Result<(), TpmError> {
    ctx.tr_close(&mut object).map_err(library("TR_Close"))
}

/// Converts one of `dps-protocol`'s templates (the single source of our templates).
pub(super) fn to_esapi_public(public: &dps_protocol::tpm::Public) -> Result<Public, TpmError> {
    Public::unmarshall(&public.to_tpmt()).map_err(library("public area conversion"))
}

fn ensure(
    ctx: &mut Context,
    handle: u32,
    hierarchy: Hierarchy,
    template: &dps_protocol::tpm::Public,
) -> Result<KeyHandle, TpmError> {
    if let Some(object) = persistent(ctx, handle)? {
        return Ok(KeyHandle::from(object));
    }
    tracing::info!(
        handle = format_args!("0x{handle:08x}"),
        "creating primary key"
    );
    let public = to_esapi_public(template)?;
    let transient = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.create_primary(hierarchy, public, None, None, None, None)
        })
        .map_err(|source| TpmError::Command {
            command: "CreatePrimary",
            source,
        })?
        .key_handle;
    let target = persistent_handle(handle)?;
    let persisted = ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
        ctx.evict_control(
            Provision::Owner,
            transient.into(),
            Persistent::Persistent(target),
        )
    });
    let flushed = ctx.flush_context(transient.into());
    let persisted = persisted.map_err(|source| TpmError::Command {
        command: "EvictControl",
        source,
    })?;
    flushed.map_err(|source| TpmError::Command {
        command: "FlushContext",
        source,
    })?;
    Ok(KeyHandle::from(persisted))
}

/// The EK at `handle`, created from `template` (one of the TCG EK templates) if none is there.
pub(super) fn ensure_endorsement_key(
    ctx: &mut Context,
    handle: u32,
    template: &dps_protocol::tpm::Public,
) -> Result<KeyHandle, TpmError> {
    ensure(ctx, handle, Hierarchy::Endorsement, template)
}

/// The SRK at `handle`, created from `template` (an SRK template of the TCG TPM v2.0
/// Provisioning Guidance) if none is there.
pub(super) fn ensure_storage_root_key(
    ctx: &mut Context,
    handle: u32,
    template: &dps_protocol::tpm::Public,
) -> Result<KeyHandle, TpmError> {
    ensure(ctx, handle, Hierarchy::Owner, template)
}

/// The key's public area as a marshalled `TPM2B_PUBLIC`.
pub(super) fn read_public_tpm2b(ctx: &mut Context, key: KeyHandle) -> Result<Vec<u8>, TpmError> {
    let command = "ReadPublic";
    let (public, _, _) = ctx
        .read_public(key)
        .map_err(|source| TpmError::Command { command, source })?;
    PublicBuffer::try_from(public)
        .and_then(|buffer| buffer.marshall())
        .map_err(library("TPM2B_PUBLIC marshalling"))
}
