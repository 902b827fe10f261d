//! Big-endian TPM 2.0 marshalling: one bounded reader that refuses leftovers, and append helpers.
//!
//! Every `TPM2B` size is checked against the Part 2 maximum of its type *before* anything is
//! sliced, so a hostile size field can neither panic nor make us allocate.

use crate::error::DecodeError;

/// A cursor over borrowed bytes. Reads advance it; [`Reader::finish`] fails if bytes remain.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Takes exactly `n` bytes.
    pub fn take(&mut self, n: usize, structure: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated {
                structure,
                needed: n,
                available: self.buf.len(),
            });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u16(&mut self, structure: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, structure)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, structure: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, structure)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a `TPM2B`: a u16 size, checked against `max`, then that many bytes.
    pub fn tpm2b(&mut self, structure: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let size = usize::from(self.u16(structure)?);
        if size > max {
            return Err(DecodeError::SizeTooLarge {
                structure,
                max,
                got: size,
            });
        }
        self.take(size, structure)
    }

    /// Succeeds only if every byte was read.
    pub fn finish(self, structure: &'static str) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingData {
                structure,
                len: self.buf.len(),
            })
        }
    }
}

/// Appends a big-endian u16.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a big-endian u32.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `TPM2B(data)`: u16 size then the bytes.
///
/// Callers only pass buffers bounded by a TPM structure maximum (all far below 64 KiB); a
/// larger one is a programming error, caught in debug builds.
pub fn put_tpm2b(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(
        u16::try_from(data.len()).is_ok(),
        "TPM2B larger than 64 KiB"
    );
    put_u16(out, data.len() as u16);
    out.extend_from_slice(data);
}

/// Returns `TPM2B(data)` as a new buffer.
#[must_use]
pub fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + data.len());
    put_tpm2b(&mut out, data);
    out
}
