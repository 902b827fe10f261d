//! Cross-checks with an independent implementation: tpm2-tools.
