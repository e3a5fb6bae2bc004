//! The signed statement: what a release key vouches for about one package file.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, VerifyError};
use crate::wire::{WireReader, put_prefixed};
use opamp_packages::ContentHash;

/// Longest package name in a statement, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest version string in a statement, in bytes (the one limit of
/// [`opamp_packages::parse_version`]).
pub use opamp_packages::MAX_VERSION_LEN;

/// Whether a statement lets agents move *down* to its version.
///
/// Agents refuse a version lower than the highest they have installed (anti-rollback). A release
/// manager who wants a fleet to go back, for example from a broken 1.5.0 to 1.4.2, signs the
/// 1.4.2 statement with `AllowFromAtMost(1.5.0)`: agents whose highest installed version is at
/// most 1.5.0 accept the downgrade; an agent that has already installed 1.6.0 still refuses,
/// so an old rollback statement cannot drag agents back from later releases.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DowngradeAuthorisation {
    /// No downgrade: agents that installed a higher version refuse this one. Wire tag 0.
    #[default]
    Forbidden,
    /// Agents whose highest installed version is at most this one may downgrade. Wire tag 1.
    AllowFromAtMost(semver::Version),
}

/// A release statement: package name, version, content hash, size, expiry and downgrade rule.
///
/// Build one with [`Statement::new`], sign it with
/// [`ReleaseSigner::sign_statement`](crate::ReleaseSigner::sign_statement). The byte encoding is
/// documented on [`SignatureEnvelope`](crate::SignatureEnvelope).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use opamp_verify::{ContentHash, DowngradeAuthorisation, Statement};
/// let statement = Statement::new(
///     "otelcol-contrib",
///     "0.110.0",
///     ContentHash::of(b"binary"),
///     6,
///     UNIX_EPOCH + Duration::from_secs(1_900_000_000),
/// )?
/// .with_downgrade(DowngradeAuthorisation::AllowFromAtMost("0.111.0".parse().unwrap()));
/// assert_eq!(statement.version(), "0.110.0");
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    name: String,
    version: String,
    content_hash: ContentHash,
    size: u64,
    not_after: u64,
    downgrade: DowngradeAuthorisation,
}

impl Statement {
    /// A statement with no downgrade authorisation.
    ///
    /// `name` must be 1 to 255 bytes without NUL; `version` must be a semantic version written
    /// canonically, optionally after a `v` (`1.2.3`, `v0.110.0-rc.1`); `not_after` is rounded
    /// down to whole seconds.
    pub fn new(
        name: &str,
        version: &str,
        content_hash: ContentHash,
        size: u64,
        not_after: SystemTime,
    ) -> Result<Self> {
        check_name(name)?;
        parse_version(version)?;
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            content_hash,
            size,
            not_after: unix_seconds(not_after),
            downgrade: DowngradeAuthorisation::Forbidden,
        })
    }

    /// Sets the downgrade rule.
    #[must_use]
    pub fn with_downgrade(mut self, downgrade: DowngradeAuthorisation) -> Self {
        self.downgrade = downgrade;
        self
    }

    /// Package name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version string exactly as signed.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// SHA-256 of the package file.
    pub fn content_hash(&self) -> ContentHash {
        self.content_hash
    }

    /// Size of the package file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Expiry, unix seconds: the statement is refused when `now > not_after`.
    pub fn not_after(&self) -> u64 {
        self.not_after
    }

    /// The downgrade rule.
    pub fn downgrade(&self) -> &DowngradeAuthorisation {
        &self.downgrade
    }

    /// The statement's canonical encoding (see [`SignatureEnvelope`](crate::SignatureEnvelope)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.name.len() + self.version.len());
        put_prefixed(&mut out, self.name.as_bytes());
        put_prefixed(&mut out, self.version.as_bytes());
        out.extend_from_slice(self.content_hash.as_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        match &self.downgrade {
            DowngradeAuthorisation::Forbidden => out.push(0),
            DowngradeAuthorisation::AllowFromAtMost(version) => {
                out.push(1);
                put_prefixed(&mut out, version.to_string().as_bytes());
            }
        }
        out
    }

    /// Parses a statement encoding strictly: every length in range, canonical versions, no
    /// trailing bytes. Never panics, whatever the input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = WireReader::new(bytes);
        let name = reader.prefixed_str("statement name", MAX_NAME_LEN)?;
        check_name(name)?;
        let version = reader.prefixed_str("statement version", MAX_VERSION_LEN)?;
        parse_version(version).map_err(|_| VerifyError::Malformed {
            field: "statement version",
            reason: "not a canonical semantic version",
        })?;
        let content_hash = ContentHash::from_bytes(reader.array("statement content hash")?);
        let size = reader.u64("statement size")?;
        let not_after = reader.u64("statement not-after")?;
        let downgrade = match reader.u8("statement downgrade tag")? {
            0 => DowngradeAuthorisation::Forbidden,
            1 => {
                let text = reader.prefixed_str("statement downgrade version", MAX_VERSION_LEN)?;
                // Written without a `v`, so one statement has one encoding.
                match opamp_packages::parse_version(text) {
                    Ok(version) if version.to_string() == text => {
                        DowngradeAuthorisation::AllowFromAtMost(version)
                    }
                    _ => {
                        return Err(VerifyError::Malformed {
                            field: "statement downgrade version",
                            reason: "not a canonical semantic version",
                        });
                    }
                }
            }
            _ => {
                return Err(VerifyError::Malformed {
                    field: "statement downgrade tag",
                    reason: "unknown tag (known: 0 forbidden, 1 allow-from-at-most)",
                });
            }
        };
        reader.finish("statement")?;
        Ok(Self {
            name: name.to_owned(),
            version: version.to_owned(),
            content_hash,
            size,
            not_after,
            downgrade,
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.contains('\0') {
        return Err(VerifyError::Malformed {
            field: "statement name",
            reason: "must be 1 to 255 bytes without NUL",
        });
    }
    Ok(())
}

/// Parses a version inside a statement with [`opamp_packages::parse_version`].
pub(crate) fn parse_version(text: &str) -> Result<semver::Version> {
    opamp_packages::parse_version(text).map_err(|source| VerifyError::InvalidVersion {
        version: text.to_owned(),
        source,
    })
}

/// Whole unix seconds of `time`, 0 before the epoch.
pub(crate) fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Statement {
        Statement::new(
            "otelcol",
            "v1.2.3-rc.1+build.5",
            ContentHash::of(b"x"),
            42,
            UNIX_EPOCH + Duration::from_secs(1000),
        )
        .unwrap()
        .with_downgrade(DowngradeAuthorisation::AllowFromAtMost(
            semver::Version::new(1, 3, 0),
        ))
    }

    #[test]
    fn round_trips() {
        let statement = sample();
        assert_eq!(
            Statement::from_bytes(&statement.to_bytes()).unwrap(),
            statement
        );
    }

    #[test]
    fn refuses_trailing_bytes_and_truncation() {
        let mut bytes = sample().to_bytes();
        bytes.push(0);
        assert!(matches!(
            Statement::from_bytes(&bytes),
            Err(VerifyError::Malformed { .. })
        ));
        bytes.truncate(bytes.len() - 2);
        assert!(matches!(
            Statement::from_bytes(&bytes),
            Err(VerifyError::Truncated { .. })
        ));
    }

    #[test]
    fn versions_must_be_canonical() {
        assert!(parse_version("1.2.3").is_ok());
        assert!(parse_version("v1.2.3").is_ok());
        assert!(parse_version("01.2.3").is_err());
        assert!(parse_version("1.2").is_err());
        assert!(parse_version("vv1.2.3").is_err());
    }

    #[test]
    fn names_are_checked() {
        let hash = ContentHash::of(b"");
        assert!(Statement::new("", "1.0.0", hash, 0, UNIX_EPOCH).is_err());
        assert!(Statement::new(&"a".repeat(256), "1.0.0", hash, 0, UNIX_EPOCH).is_err());
        assert!(Statement::new("a\0b", "1.0.0", hash, 0, UNIX_EPOCH).is_err());
    }
}
