use std::str::FromStr;

use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

use super::TpmError;

/// The TCTI used when none is configured: the kernel's resource manager.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// The TCTI from the environment as tpm2-tools reads it (`TPM2TOOLS_TCTI`, then `TCTI`), else
/// [`DEFAULT_TCTI`].
#[must_use]
pub fn tcti_from_env() -> String {
    ["TPM2TOOLS_TCTI", "TCTI"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_TCTI.to_owned())
}

pub(super) fn open(tcti: &str) -> Result<Context, TpmError> {
    let open_error = |source| TpmError::Open {
        tcti: tcti.to_owned(),
        source,
    };
    let conf = TctiNameConf::from_str(tcti).map_err(open_error)?;
    Context::new(conf).map_err(open_error)
}
