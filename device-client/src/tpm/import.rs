//! Importing a DPS `authenticationKey` (docs/protocol.md §5):
//! `ActivateCredential` (SRK, EK under PolicySecret(endorsement)) → inner wrapping key;
//! Import under the SRK with it → Load → `EvictControl` to the persistent handle.

use dps_protocol::tpm::{Tpm2bEncryptedSecret, Tpm2bIdObject};
use dps_protocol::AuthenticationKey;
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{AuthHandle, KeyHandle, ObjectHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Data, Digest, EncryptedSecret, IdObject, Nonce, Private, SymmetricDefinition,
    SymmetricDefinitionObject,
};
use tss_esapi::Context;

use super::keys::{command, library, persistent, persistent_handle, to_esapi_public};
use super::TpmError;

pub(super) fn import(
    ctx: &mut Context,
    ek: KeyHandle,
    srk: KeyHandle,
    blob: &AuthenticationKey,
    device_key_handle: u32,
) -> Result<(), TpmError> {
    let inner_key = activate_credential(ctx, ek, srk, &blob.credential_blob, &blob.secret)?;

    let public = to_esapi_public(&blob.public)?;
    let duplicate =
        Private::try_from(blob.duplicate.body().to_vec()).map_err(library("TPM2B_PRIVATE"))?;
    let in_sym_seed = EncryptedSecret::try_from(blob.in_sym_seed.body().to_vec())
        .map_err(library("TPM2B_ENCRYPTED_SECRET"))?;
    let private = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.import(
                srk.into(),
                Some(inner_key),
                public.clone(),
                duplicate,
                in_sym_seed,
                SymmetricDefinitionObject::AES_128_CFB,
            )
        })
        .map_err(command("Import"))?;
    let loaded = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk, private, public)
        })
        .map_err(command("Load"))?;

    persist_loaded(ctx, loaded, device_key_handle)
}

/// Recovers a credential sealed to `ek` and bound to the name of `object` (the SRK for the
/// inner wrapping key; the attestation key for an attestation nonce).
///
/// How the EK is authorised depends on its template (TCG EK Credential Profile 2.5): a
/// low-range EK (L-1, L-2) has no userWithAuth and the policy `PolicySecret(TPM_RH_ENDORSEMENT)`,
/// met by a SHA-256 policy session, flushed whatever happens; a high-range EK (H-1…H-7) has
/// userWithAuth and an empty authValue, so a password session will do — its policy, an OR of
/// the SHA-384 (or larger) PolicySecret and PolicyAuthorizeNV branches, is not met by a SHA-256
/// session.
pub(super) fn activate_credential(
    ctx: &mut Context,
    ek: KeyHandle,
    object: KeyHandle,
    credential_blob: &Tpm2bIdObject,
    secret: &Tpm2bEncryptedSecret,
) -> Result<Data, TpmError> {
    let blob_and_secret = || -> Result<(IdObject, EncryptedSecret), TpmError> {
        Ok((
            IdObject::try_from(credential_blob.body().to_vec())
                .map_err(library("TPM2B_ID_OBJECT"))?,
            EncryptedSecret::try_from(secret.body().to_vec())
                .map_err(library("TPM2B_ENCRYPTED_SECRET"))?,
        ))
    };
    let (ek_public, _, _) = ctx.read_public(ek).map_err(command("ReadPublic"))?;
    if ek_public.object_attributes().user_with_auth() {
        let (credential_blob, secret) = blob_and_secret()?;
        let inner_key = ctx
            .execute_with_sessions(
                (
                    Some(AuthSession::Password),
                    Some(AuthSession::Password),
                    None,
                ),
                |ctx| ctx.activate_credential(object, ek, credential_blob, secret),
            )
            .map_err(command("ActivateCredential"))?;
        return Data::try_from(inner_key.value().to_vec()).map_err(library("activated credential"));
    }
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(command("StartAuthSession"))?
        .ok_or(TpmError::Unexpected {
            what: "StartAuthSession returned no session",
        })?;

    let activated = (|| {
        let policy = PolicySession::try_from(session).map_err(library("policy session"))?;
        let (credential_blob, secret) = blob_and_secret()?;
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.policy_secret(
                policy,
                AuthHandle::Endorsement,
                Nonce::default(),
                Digest::default(),
                Nonce::default(),
                None,
            )
        })
        .map_err(command("PolicySecret"))?;
        ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |ctx| {
            ctx.activate_credential(object, ek, credential_blob, secret)
        })
        .map_err(command("ActivateCredential"))
    })();

    let flushed = ctx
        .flush_context(SessionHandle::from(session).into())
        .map_err(command("FlushContext"));
    let inner_key = activated?;
    flushed?;
    Data::try_from(inner_key.value().to_vec()).map_err(library("activated credential"))
}

/// Makes the transient `loaded` persistent at `handle` ([`persist`]), then flushes the transient
/// copy whatever happened.
pub(super) fn persist_loaded(
    ctx: &mut Context,
    loaded: KeyHandle,
    handle: u32,
) -> Result<(), TpmError> {
    let persisted = persist(ctx, loaded, handle);
    let flushed = ctx
        .flush_context(loaded.into())
        .map_err(command("FlushContext"));
    persisted?;
    flushed
}

/// Makes `loaded` persistent at `handle`, evicting whatever was there first. The new key is
/// already loaded, so a failure here leaves the old key in place or no key, never a wrong one.
fn persist(ctx: &mut Context, loaded: KeyHandle, handle: u32) -> Result<(), TpmError> {
    let target = persistent_handle(handle)?;
    if let Some(old) = persistent(ctx, handle)? {
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(Provision::Owner, old, Persistent::Persistent(target))
        })
        .map_err(command("EvictControl"))?;
        // tpm2-tss 3.2 keeps the evicted object's metadata (its old name) in the ESYS context,
        // and a later Esys_TR_FromTPMPublic of the same handle then fails with "name mismatch".
        // Drop it; tss-esapi has already marked it closed, so its bookkeeping error is moot.
        let mut stale = old;
        let _ = ctx.tr_close(&mut stale);
    }
    let mut persisted: ObjectHandle = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.evict_control(
                Provision::Owner,
                loaded.into(),
                Persistent::Persistent(target),
            )
        })
        .map_err(command("EvictControl"))?;
    ctx.tr_close(&mut persisted).map_err(library("TR_Close"))
}
