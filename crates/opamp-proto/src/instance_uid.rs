//! The 16-byte agent instance identifier.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Why bytes or text could not become an [`InstanceUid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceUidError {
    /// The wire field did not hold exactly 16 bytes.
    #[error("instance uid must be 16 bytes, got {len}")]
    WrongLength {
        /// Number of bytes received.
        len: usize,
    },
    /// The text is not a UUID in canonical (or simple hex) form.
    #[error("instance uid {text:?} is not a UUID: {reason}")]
    BadText {
        /// The rejected input (truncated to 64 characters).
        text: String,
        /// What the UUID parser objected to.
        reason: String,
    },
}

/// An OpAMP agent instance uid: exactly 16 bytes, UUID v7 by default.
///
/// Displays in the canonical hyphenated UUID form and parses from it.
///
/// ```
/// use opamp_proto::InstanceUid;
/// let uid = InstanceUid::new_v7();
/// let text = uid.to_string();
/// assert_eq!(text.parse::<InstanceUid>().unwrap(), uid);
/// assert!(InstanceUid::from_slice(&[1, 2, 3]).is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct InstanceUid(Uuid);

impl InstanceUid {
    /// Length of an instance uid on the wire.
    pub const LEN: usize = 16;

    /// A fresh time-ordered UUID v7, as the spec recommends. Reads the system clock and RNG.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }

    /// Takes the wire bytes, refusing anything that is not exactly 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, InstanceUidError> {
        let array: [u8; 16] = bytes
            .try_into()
            .map_err(|_| InstanceUidError::WrongLength { len: bytes.len() })?;
        Ok(Self::from(array))
    }

    /// The 16 wire bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The 16 wire bytes as a vector, ready for a prost `bytes` field.
    pub fn to_vec(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    /// The UUID view of this uid.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl From<[u8; 16]> for InstanceUid {
    fn from(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }
}

impl From<Uuid> for InstanceUid {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl TryFrom<&[u8]> for InstanceUid {
    type Error = InstanceUidError;
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::from_slice(bytes)
    }
}

impl fmt::Display for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for InstanceUid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceUid({})", self.0.hyphenated())
    }
}

impl FromStr for InstanceUid {
    type Err = InstanceUidError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|error| InstanceUidError::BadText {
                text: text.chars().take(64).collect(),
                reason: error.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_has_version_7_and_round_trips_through_text_and_bytes() {
        let uid = InstanceUid::new_v7();
        assert_eq!(uid.as_uuid().get_version_num(), 7);
        assert_eq!(InstanceUid::from_slice(&uid.to_vec()).unwrap(), uid);
        assert_eq!(uid.to_string().parse::<InstanceUid>().unwrap(), uid);
    }

    #[test]
    fn wrong_lengths_are_refused_with_the_length() {
        for len in [0usize, 1, 15, 17, 32] {
            let error = InstanceUid::from_slice(&vec![7; len]).unwrap_err();
            assert_eq!(error, InstanceUidError::WrongLength { len });
            assert!(error.to_string().contains(&len.to_string()));
        }
    }

    #[test]
    fn canonical_text_is_lower_case_hyphenated() {
        let uid = InstanceUid::from([0xAB; 16]);
        assert_eq!(uid.to_string(), "abababab-abab-abab-abab-abababababab");
        assert!("not-a-uuid".parse::<InstanceUid>().is_err());
    }
}
