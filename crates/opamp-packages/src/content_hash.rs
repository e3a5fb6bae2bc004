//! The SHA-256 digest of a package file (`DownloadableFile.content_hash`).
//!
//! This is the workspace's one content-hash type: the verifier (`opamp-verify` re-exports it),
//! the supervisor's install journal and the fleet server all use it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::OfferError;
use crate::hash::HASH_LEN;

/// A SHA-256 digest of a package file: exactly 32 bytes, checked when built.
///
/// Equality is constant time, so comparing an attacker-supplied hash leaks nothing through
/// timing. `Display` and `FromStr` use hex (lowercase when printed, either case when read). With
/// the `serde` feature it serializes as a lowercase hex string.
///
/// ```
/// use opamp_packages::ContentHash;
///
/// let hash = ContentHash::of(b"hello");
/// let same = ContentHash::from_hex(
///     "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
/// )?;
/// assert_eq!(hash, same);
/// assert_eq!(hash.to_string().parse::<ContentHash>()?, hash);
/// assert!(ContentHash::from_slice(&[0; 20]).is_err());
/// # Ok::<(), opamp_packages::OfferError>(())
/// ```
#[derive(Clone, Copy)]
pub struct ContentHash([u8; HASH_LEN]);

impl ContentHash {
    /// Wraps a digest computed elsewhere.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }

    /// Reads a digest from bytes of unknown length (e.g. an OpAMP `content_hash`).
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

    /// SHA-256 of `content`, for content small enough to hold in memory (release tooling and
    /// tests; agents verify downloads with `opamp-verify`'s streaming hashers instead).
    #[must_use]
    pub fn of(content: &[u8]) -> Self {
        Self(Sha256::digest(content).into())
    }

    /// The digest bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Compares in constant time (what `==` does too).
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl PartialEq for ContentHash {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for ContentHash {}

impl PartialOrd for ContentHash {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Byte order, for sorted collections; never used to decide whether two hashes match.
impl Ord for ContentHash {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.cmp(&other.0)
    }
}

impl std::hash::Hash for ContentHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
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

impl FromStr for ContentHash {
    type Err = OfferError;

    fn from_str(text: &str) -> Result<Self, OfferError> {
        Self::from_hex(text)
    }
}

impl From<[u8; HASH_LEN]> for ContentHash {
    fn from(bytes: [u8; HASH_LEN]) -> Self {
        Self(bytes)
    }
}

/// A lowercase hex string: the form the supervisor's install journal has always stored (as
/// `journal::Sha256Hash` before this type replaced it), so old journals stay readable.
#[cfg(feature = "serde")]
impl serde::Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        Self::from_slice(&bytes).map_err(serde::de::Error::custom)
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
        let hash = ContentHash::of(b"abc");
        assert_eq!(ContentHash::from_hex(&hash.to_string()).unwrap(), hash);
        assert_eq!(
            ContentHash::from_hex(&hash.to_string().to_uppercase()).unwrap(),
            hash
        );
        assert_eq!(hash.to_string().parse::<ContentHash>().unwrap(), hash);
        assert!(matches!(
            ContentHash::from_hex("zz"),
            Err(OfferError::ContentHashHex { .. })
        ));
        assert!("zz".parse::<ContentHash>().is_err());
        assert_eq!(
            ContentHash::from_hex("abcd"),
            Err(OfferError::ContentHashLength { len: 2 })
        );
    }

    #[test]
    fn digest_matches_known_vector() {
        // SHA-256("abc") from FIPS 180-2, appendix B.1.
        assert_eq!(
            ContentHash::of(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn equality_and_order_follow_the_bytes() {
        let low = ContentHash::from_bytes([1; 32]);
        let high = ContentHash::from_bytes([2; 32]);
        assert_eq!(low, ContentHash::from([1; 32]));
        assert_ne!(low, high);
        assert!(low.ct_eq(&ContentHash::from_bytes([1; 32])));
        assert!(low < high);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serializes_as_lowercase_hex() {
        let hash = ContentHash::of(b"abc");
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(
            json,
            "\"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\""
        );
        assert_eq!(serde_json::from_str::<ContentHash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<ContentHash>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<ContentHash>("\"zz\"").is_err());
    }
}
