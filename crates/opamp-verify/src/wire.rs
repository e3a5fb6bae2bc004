//! Strict big-endian reader and writer for the envelope's length-prefixed fields.

use crate::error::{Result, VerifyError};

/// Reads fields front to back; every read names its field so errors say where input ended.
pub(crate) struct WireReader<'a> {
    rest: &'a [u8],
}

impl<'a> WireReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn bytes(&mut self, field: &'static str, len: usize) -> Result<&'a [u8]> {
        if self.rest.len() < len {
            return Err(VerifyError::Truncated {
                field,
                needed: len,
                available: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(field, N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A u16 length then that many bytes; the length must be within `1..=max`.
    pub(crate) fn prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8]> {
        let len = usize::from(self.u16(field)?);
        if len == 0 {
            return Err(VerifyError::Malformed {
                field,
                reason: "must not be empty",
            });
        }
        if len > max {
            return Err(VerifyError::Malformed {
                field,
                reason: "longer than its maximum length",
            });
        }
        self.bytes(field, len)
    }

    pub(crate) fn prefixed_str(&mut self, field: &'static str, max: usize) -> Result<&'a str> {
        std::str::from_utf8(self.prefixed(field, max)?).map_err(|_| VerifyError::Malformed {
            field,
            reason: "not valid UTF-8",
        })
    }

    pub(crate) fn finish(self, what: &'static str) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(VerifyError::Malformed {
                field: what,
                reason: "trailing bytes after the last field",
            })
        }
    }
}

/// Appends a u16 length prefix and the bytes; callers have checked the length fits.
pub(crate) fn put_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}
