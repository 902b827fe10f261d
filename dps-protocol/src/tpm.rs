//! TPM 2.0 structures the protocol carries (TPM 2.0 Library, Part 2 "Structures").

pub mod buffers;
pub mod constants;
pub mod name;
pub mod public;
pub mod sensitive;
pub mod templates;

pub use buffers::{Tpm2bData, Tpm2bEncryptedSecret, Tpm2bIdObject, Tpm2bPrivate};
pub use name::Name;
pub use public::{Public, PublicParameters, Scheme, SeedKey, SymDefObject};
pub use sensitive::KeyedHashSensitive;
