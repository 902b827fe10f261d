//! The key a certificate is issued for (docs/protocol.md §11): an ECDSA signing key made in the
//! TPM under the SRK (`templates::certificate_key_ecdsa`: fixedTPM, fixedParent,
//! sensitiveDataOrigin, sign, not restricted), persisted; certified by the attestation key
//! (`TPM2_Certify` over the service's nonce, the proof that it lives in this TPM); and signing
//! digests (the CSR's self-signature, TLS handshakes) without ever leaving the TPM.

use dps_protocol::tpm::templates::certificate_key_ecdsa;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{Data, Digest, SignatureScheme};
use tss_esapi::traits::Marshall;
use tss_esapi::tss2_esys::{TPM2B_DIGEST, TPMT_TK_HASHCHECK};
use tss_esapi::Context;

use super::keys::{command, ensure_persisted, library, to_esapi_public};
use super::TpmError;

/// The certificate key at `handle`, creating it under `srk` (ECDSA P-384 if `p384`, else P-256)
/// and persisting it there if absent.
pub(super) fn ensure_certificate_key(
    ctx: &mut Context,
    srk: KeyHandle,
    handle: u32,
    p384: bool,
) -> Result<KeyHandle, TpmError> {
    ensure_persisted(ctx, handle, |ctx| {
        tracing::info!(
            handle = format_args!("0x{handle:08x}"),
            curve = if p384 { "P-384" } else { "P-256" },
            "creating the certificate key"
        );
        let template = to_esapi_public(&certificate_key_ecdsa(p384))?;
        let created = ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.create(srk, template, None, None, None, None)
            })
            .map_err(command("Create"))?;
        ctx.execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.load(srk, created.out_private, created.out_public)
        })
        .map_err(command("Load"))
    })
}

/// `TPM2_Certify` of `key` by `ak` with `nonce` as qualifying data: the `TPMS_ATTEST` and
/// `TPMT_SIGNATURE` bytes.
pub(super) fn certify(
    ctx: &mut Context,
    key: KeyHandle,
    ak: KeyHandle,
    nonce: &[u8],
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    let qualifying = Data::try_from(nonce.to_vec()).map_err(library("qualifying data"))?;
    let (attest, signature) = ctx
        .execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |ctx| ctx.certify(key.into(), ak, qualifying, SignatureScheme::Null),
        )
        .map_err(command("Certify"))?;
    Ok((
        attest
            .marshall()
            .map_err(library("TPMS_ATTEST marshalling"))?,
        signature
            .marshall()
            .map_err(library("TPMT_SIGNATURE marshalling"))?,
    ))
}

/// `TPM2_Sign` of `digest` by `key` in its own scheme: the `TPMT_SIGNATURE` bytes. The key is
/// not restricted, so the TPM signs any digest with a null ticket.
pub(super) fn sign(ctx: &mut Context, key: KeyHandle, digest: &[u8]) -> Result<Vec<u8>, TpmError> {
    let digest = Digest::try_from(digest.to_vec()).map_err(library("digest"))?;
    let validation = TPMT_TK_HASHCHECK {
        tag: TPM2_ST_HASHCHECK,
        hierarchy: TPM2_RH_NULL,
        digest: TPM2B_DIGEST::default(),
    }
    .try_into()
    .map_err(library("null hash check ticket"))?;
    let signature = ctx
        .execute_with_session(Some(AuthSession::Password), |ctx| {
            ctx.sign(key, digest, SignatureScheme::Null, validation)
        })
        .map_err(command("Sign"))?;
    signature
        .marshall()
        .map_err(library("TPMT_SIGNATURE marshalling"))
}
