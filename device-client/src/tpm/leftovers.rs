//! What a killed predecessor left in the TPM. Without a resource manager in front (swtpm,
//! `/dev/tpm0`; the kernel's `/dev/tpmrm0` and tpm2-abrmd give each client its own view), the
//! sessions and transient objects a client had open when it was killed stay loaded, and a TPM
//! has only a few slots: after a few kills every command fails with TPM_RC_SESSION_MEMORY or
//! TPM_RC_OBJECT_MEMORY. These TPMs serve one client at a time (`/dev/tpm0` opens exclusively,
//! swtpm queues a second connection), so whatever is loaded when we open one belongs to a dead
//! client, and flushing it is safe.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::TpmHandle;
use tss_esapi::structures::CapabilityData;
use tss_esapi::Context;

/// First handles of the ranges to clear: transient objects (`TPM_HT_TRANSIENT`) and loaded
/// sessions (`TPM_HT_HMAC_SESSION`; GetCapability lists policy sessions there too).
const RANGES: [u32; 2] = [0x8000_0000, 0x0200_0000];
/// More than any TPM has slots for.
const MAX_LISTED: u32 = 64;

/// Whether the TCTI reaches the TPM without a resource manager.
#[must_use]
pub(super) fn unshared(tcti: &str) -> bool {
    tcti.starts_with("swtpm")
        || tcti.starts_with("mssim")
        || tcti
            .strip_prefix("device:")
            .is_some_and(|path| !path.contains("tpmrm"))
}

/// Flushes every loaded session and transient object; returns how many. A handle that cannot
/// be flushed is logged and skipped: the commands that follow will say what is wrong.
pub(super) fn flush(ctx: &mut Context) -> usize {
    let mut flushed = 0;
    for first in RANGES {
        let Ok((CapabilityData::Handles(list), _)) =
            ctx.get_capability(CapabilityType::Handles, first, MAX_LISTED)
        else {
            continue;
        };
        for handle in list.into_inner() {
            let raw = u32::from(handle);
            // Only the range asked for (GetCapability continues into the next one).
            let in_range = match first >> 24 {
                0x80 => raw >> 24 == 0x80,
                _ => matches!(raw >> 24, 0x02 | 0x03),
            };
            if !in_range {
                continue;
            }
            let done = TpmHandle::try_from(raw)
                .and_then(|h| ctx.tr_from_tpm_public(h))
                .and_then(|object| ctx.flush_context(object));
            match done {
                Ok(()) => flushed += 1,
                Err(e) => {
                    tracing::debug!(handle = format_args!("0x{raw:08x}"), error = %e, "not flushed");
                }
            }
        }
    }
    if flushed > 0 {
        tracing::warn!(
            flushed,
            "flushed sessions and objects a killed client left in the TPM"
        );
    }
    flushed
}
