//! The SHA-256 digest of a package file (`DownloadableFile.content_hash`).

use std::fmt;

use sha2::{Digest, Sha256};

use crate::error::OfferError;
use crate::hash::HASH_LEN;

/// A SHA-256 digest of a package file: exactly 32 bytes, checked when built.
///
/// ```
/// use opamp_packages::ContentHash;
///
/// let hash = ContentHash::digest(b"hello");
/// let same = ContentHash::from_hex(
///     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
/// )?;
/// assert_eq!(hash, same);
/// assert!(ContentHash::from_slice(&[0; 20]).is_err());
/// # Ok::<(), opamp_packages::OfferError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash([u8; HASH_LEN]);

impl ContentHash {
    /// Wraps a digest computed elsewhere.
    #[must_use]
    pub const fn new(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a digest from bytes of unknown length.
    ///
    /// # Errors
    /// [`OfferError::ContentHashLength`] unless `bytes` is 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, OfferError> {
        <[u8; HASH_LEN]>::try_from(bytes)
            .map(Self)
            .map_err(|_| OfferError::ContentHashLength { len: bytes.len() })
    }

    /// Reads a digest from 64 hex digits (either case), as `sha256sum` prints it.
    ///
    /// # Errors
    /// [`OfferError::ContentHashHex`] for non-hex input, [`OfferError::ContentHashLength`] for a
    /// digest of the wrong length.
    pub fn from_hex(text: &str) -> Result<Self, OfferError> {
        let bytes = hex::decode(text.trim()).map_err(|e| OfferError::ContentHashHex {
            reason: e.to_string(),
        })?;
        Self::from_slice(&bytes)
    }

    /// SHA-256 of `content`, for files small enough to hold in memory (release tooling and
    /// tests; agents verify downloads with a streaming verifier instead).
    #[must_use]
    pub fn digest(content: &[u8]) -> Self {
        Self(Sha256::digest(content).into())
    }

    /// The digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

impl From<[u8; HASH_LEN]> for ContentHash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_checked() {
        assert_eq!(
            ContentHash::from_slice(&[1; 31]),
            Err(OfferError::ContentHashLength { len: 31 })
        );
        assert_eq!(
            ContentHash::from_slice(&[1; 33]),
            Err(OfferError::ContentHashLength { len: 33 })
        );
        assert_eq!(
            ContentHash::from_slice(&[1; 32]).unwrap().as_bytes(),
            &[1; 32]
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_garbage() {
        let hash = ContentHash::digest(b"abc");
        assert_eq!(ContentHash::from_hex(&hash.to_string()).unwrap(), hash);
        assert_eq!(
            ContentHash::from_hex(&hash.to_string().to_uppercase()).unwrap(),
            hash
        );
        assert!(matches!(
            ContentHash::from_hex("zz"),
            Err(OfferError::ContentHashHex { .. })
        ));
        assert_eq!(
            ContentHash::from_hex("abcd"),
            Err(OfferError::ContentHashLength { len: 2 })
        );
    }

    #[test]
    fn digest_matches_known_vector() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            ContentHash::digest(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
