//! The opaque TPM2B buffers of the protocol. Each holds the body without its size prefix (as
//! tss-esapi's `IdObject`, `EncryptedSecret`, `Private` and `Data` do) and enforces its maximum.

use super::constants::{
    MAX_DATA_SIZE, MAX_ENCRYPTED_SECRET_SIZE, MAX_ID_OBJECT_SIZE, MAX_PRIVATE_SIZE,
};
use crate::error::DecodeError;
use crate::marshal::{put_tpm2b, Reader};

macro_rules! tpm2b_buffer {
    ($(#[$doc:meta])* $name:ident, $structure:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Default)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// The spec maximum of the body, in bytes.
            pub const MAX: usize = $max;
            /// The structure's name in TPM 2.0 Part 2, used in errors.
            pub const STRUCTURE: &'static str = $structure;

            /// Wraps a body, checking its size.
            pub fn new(body: Vec<u8>) -> Result<Self, DecodeError> {
                if body.len() > Self::MAX {
                    return Err(DecodeError::SizeTooLarge {
                        structure: Self::STRUCTURE,
                        max: Self::MAX,
                        got: body.len(),
                    });
                }
                Ok(Self(body))
            }

            /// Reads `size || body` from a reader.
            pub fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(Self(reader.tpm2b(Self::STRUCTURE, Self::MAX)?.to_vec()))
            }

            /// Parses exactly one marshalled TPM2B (with its size).
            pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, DecodeError> {
                let mut reader = Reader::new(bytes);
                let value = Self::read(&mut reader)?;
                reader.finish(Self::STRUCTURE)?;
                Ok(value)
            }

            /// Appends `size || body`.
            pub fn write(&self, out: &mut Vec<u8>) {
                put_tpm2b(out, &self.0);
            }

            /// The body, without its size prefix.
            #[must_use]
            pub fn body(&self) -> &[u8] {
                &self.0
            }

            /// The body, without its size prefix.
            #[must_use]
            pub fn into_body(self) -> Vec<u8> {
                self.0
            }
        }

        // Bodies may carry wrapped key material: never print them.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({} bytes)"), self.0.len())
            }
        }
    };
}

tpm2b_buffer!(
    /// `TPM2B_ID_OBJECT`: a credential made by `MakeCredential`.
    Tpm2bIdObject,
    "TPM2B_ID_OBJECT",
    MAX_ID_OBJECT_SIZE
);
tpm2b_buffer!(
    /// `TPM2B_ENCRYPTED_SECRET`: a seed encrypted to an asymmetric key.
    Tpm2bEncryptedSecret,
    "TPM2B_ENCRYPTED_SECRET",
    MAX_ENCRYPTED_SECRET_SIZE
);
tpm2b_buffer!(
    /// `TPM2B_PRIVATE`: a wrapped (duplicated or TPM-protected) sensitive area.
    Tpm2bPrivate,
    "TPM2B_PRIVATE",
    MAX_PRIVATE_SIZE
);
tpm2b_buffer!(
    /// `TPM2B_DATA`.
    Tpm2bData,
    "TPM2B_DATA",
    MAX_DATA_SIZE
);
