use tss_esapi::constants::response_code::Tss2ResponseCodeKind;

/// What went wrong talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is malformed, or the TPM behind it cannot be reached.
    #[error("cannot open the TPM at {tcti:?}")]
    Open {
        tcti: String,
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command failed (the TPM refused it, or the transport did).
    #[error("TPM2_{command} failed")]
    Command {
        command: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// tss-esapi refused a value before any command was sent (a structure that does not
    /// convert, a handle out of range), or an ESYS-local bookkeeping call failed.
    #[error("tss-esapi: {operation} failed")]
    Library {
        operation: &'static str,
        #[source]
        source: tss_esapi::Error,
    },
    /// The authenticationKey blob does not decode.
    #[error("malformed authenticationKey blob")]
    Blob(#[from] dps_protocol::DecodeError),
    /// No key is persisted at the device key handle: the device is not provisioned.
    #[error("no device key at persistent handle 0x{handle:08x}")]
    NoDeviceKey { handle: u32 },
    /// The data to HMAC is longer than one TPM buffer.
    #[error("{len} bytes to HMAC, at most {max} supported")]
    DataTooLong { len: usize, max: usize },
    /// The service asked to quote a PCR bank this TPM has not allocated (a TPM would quote it
    /// empty, and the service would refuse the quote).
    #[error("the provisioning service asked for PCR bank {bank}, which this TPM has not allocated (allocated: {allocated})")]
    BankNotAllocated { bank: String, allocated: String },
    /// No certificate key is persisted at its handle.
    #[error("no certificate key at persistent handle 0x{handle:08x}")]
    NoCertificateKey { handle: u32 },
    /// No attestation key is persisted at its handle.
    #[error("no attestation key at persistent handle 0x{handle:08x}")]
    NoAttestationKey { handle: u32 },
    /// The TPM returned something this protocol cannot use.
    #[error("unexpected TPM output: {what}")]
    Unexpected { what: &'static str },
}

impl TpmError {
    /// The TPM response code kind, if the TPM itself refused the command.
    #[must_use]
    pub fn response_code(&self) -> Option<Tss2ResponseCodeKind> {
        match self {
            Self::Open { source, .. }
            | Self::Command { source, .. }
            | Self::Library { source, .. } => match source {
                tss_esapi::Error::Tss2Error(rc) => rc.kind(),
                tss_esapi::Error::WrapperError(_) => None,
            },
            _ => None,
        }
    }

    /// The TPM rejected a blob's integrity: it was made for another EK or SRK, or altered.
    #[must_use]
    pub fn is_integrity_failure(&self) -> bool {
        self.response_code() == Some(Tss2ResponseCodeKind::Integrity)
    }

    /// The TPM command that failed, if any.
    #[must_use]
    pub fn command(&self) -> Option<&'static str> {
        match self {
            Self::Command { command, .. } => Some(command),
            _ => None,
        }
    }
}
