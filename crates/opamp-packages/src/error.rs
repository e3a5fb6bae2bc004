//! Errors: one top-level [`PackagesError`] wrapping a category error per concern.

use std::fmt;

/// Every error this crate returns, by category.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PackagesError {
    /// A package name cannot be used as a file name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// A package offer could not be built.
    #[error(transparent)]
    Offer(#[from] OfferError),
    /// A package status is not a combination the OpAMP specification allows.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// A version text is not a version ([`crate::parse_version`]).
    #[error(transparent)]
    Version(#[from] VersionError),
}

/// Why [`crate::parse_version`] refused a text. The messages leave the text out: callers
/// name it in their context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// Longer than [`crate::MAX_VERSION_LEN`].
    #[error("a version is at most {max} bytes, this one has {len}")]
    TooLong {
        /// Length of the text in bytes.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },
    /// Not semantic-version text (after one optional `v`/`V`).
    #[error("not a semantic version ({reason})")]
    NotSemver {
        /// What the semver parser said.
        reason: String,
    },
    /// Semantic-version text that would print differently.
    #[error("not written canonically (it would read {canonical:?})")]
    NotCanonical {
        /// How the version prints.
        canonical: String,
    },
}

/// Why a package name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidNameReason {
    /// The name is empty (only a lone top-level package may be unnamed; see
    /// [`PackageKey`](crate::PackageKey)).
    Empty,
    /// The name is `.` or `..`, which name a directory rather than an entry in it.
    DotOrDotDot,
    /// The name contains `/`, a path separator.
    ContainsSlash,
    /// The name contains `\`, a path separator on Windows.
    ContainsBackslash,
    /// The name contains a NUL byte, which ends a path for the operating system.
    ContainsNul,
    /// The name contains a control character other than NUL.
    ContainsControl {
        /// The first control character found.
        character: char,
    },
    /// The name is longer than a file name may be.
    TooLong {
        /// Length of the name in bytes.
        len: usize,
        /// Largest length accepted, in bytes.
        max: usize,
    },
}

impl fmt::Display for InvalidNameReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("it is empty"),
            Self::DotOrDotDot => f.write_str("`.` and `..` are directory references"),
            Self::ContainsSlash => f.write_str("it contains the path separator `/`"),
            Self::ContainsBackslash => f.write_str("it contains the path separator `\\`"),
            Self::ContainsNul => f.write_str("it contains a NUL byte"),
            Self::ContainsControl { character } => {
                write!(f, "it contains the control character {character:?}")
            }
            Self::TooLong { len, max } => {
                write!(f, "it is {len} bytes long, more than the {max} allowed")
            }
        }
    }
}

/// A package name that cannot be used as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
#[error("package name {name:?} is not usable as a file name: {reason}")]
pub struct NameError {
    name: String,
    reason: InvalidNameReason,
}

/// How much of a refused name an error keeps: names come from the network and may be huge.
const KEPT_NAME_CHARS: usize = 64;

impl NameError {
    pub(crate) fn new(name: &str, reason: InvalidNameReason) -> Self {
        let mut kept: String = name.chars().take(KEPT_NAME_CHARS).collect();
        if kept.len() < name.len() {
            kept.push_str("...");
        }
        Self { name: kept, reason }
    }

    /// The refused name, cut to its first 64 characters (followed by `...` when cut).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which rule the name broke.
    #[must_use]
    pub fn reason(&self) -> &InvalidNameReason {
        &self.reason
    }
}

/// A package offer that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// A content hash is not a SHA-256 digest.
    #[error("content hash must be 32 bytes (SHA-256), got {len} bytes")]
    ContentHashLength {
        /// Length of the given hash in bytes.
        len: usize,
    },
    /// A hex content hash could not be decoded.
    #[error("content hash is not valid hex: {reason}")]
    ContentHashHex {
        /// What the hex decoder reported.
        reason: String,
    },
    /// Two packages with the same key were added to one offer.
    #[error("package {key} is offered twice")]
    DuplicatePackage {
        /// The key given twice (wire form, `""` for the unnamed top-level package).
        key: String,
    },
    /// An unnamed top-level package was combined with another top-level package.
    #[error(
        "an unnamed top-level package must be the only top-level package, but {other} is top-level too"
    )]
    UnnamedTopLevelNotAlone {
        /// The other top-level package.
        other: String,
    },
}

/// A package status that breaks the OpAMP specification's rules (v0.18.0, "PackageStatus").
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StatusError {
    /// A status name is not a valid package key.
    #[error("package status name is invalid: {0}")]
    InvalidName(NameError),
    /// The key in `PackageStatuses.packages` differs from the `name` field of its value.
    #[error("package status key {key:?} does not match its name field {name:?}")]
    KeyNameMismatch {
        /// The map key.
        key: String,
        /// The `name` field.
        name: String,
    },
    /// The `status` number is not a known `PackageStatusEnum` value.
    #[error("package {name:?} has unknown status value {value}")]
    UnknownStatus {
        /// Package name.
        name: String,
        /// The unknown value.
        value: i32,
    },
    /// Exactly one of a version/hash pair is set; they must be set together.
    #[error("package {name:?}: {set} is set but {missing} is empty; they must be set together")]
    HalfSetPair {
        /// Package name.
        name: String,
        /// The field that is set.
        set: &'static str,
        /// The field that is empty.
        missing: &'static str,
    },
    /// An `Installed` package without `agent_has_version`/`agent_has_hash`.
    #[error("package {name:?} is Installed but agent_has_version/agent_has_hash are empty")]
    InstalledWithoutAgentHas {
        /// Package name.
        name: String,
    },
    /// An in-progress or failed installation without the offer that started it.
    #[error(
        "package {name:?} is {status} but server_offered_version/server_offered_hash are empty"
    )]
    MissingServerOffered {
        /// Package name.
        name: String,
        /// The status that needs an offer.
        status: &'static str,
    },
    /// `error_message` set on a status other than `InstallFailed`.
    #[error("package {name:?} has an error_message but its status is {status}, not InstallFailed")]
    UnexpectedErrorMessage {
        /// Package name.
        name: String,
        /// The actual status.
        status: &'static str,
    },
    /// `download_details` set on a status other than `Downloading`.
    #[error("package {name:?} has download_details but its status is {status}, not Downloading")]
    UnexpectedDownloadDetails {
        /// Package name.
        name: String,
        /// The actual status.
        status: &'static str,
    },
    /// Download progress outside 0..=100 percent or a negative or non-finite rate.
    #[error(
        "download progress {percent}% at {bytes_per_second} B/s is invalid: percent must be within 0..=100 and the rate finite and not negative"
    )]
    InvalidDownloadProgress {
        /// The percentage given.
        percent: f64,
        /// The rate given.
        bytes_per_second: f64,
    },
    /// A version/hash pair built for a status has an empty field.
    #[error("{field} must not be empty")]
    EmptyField {
        /// The empty field.
        field: &'static str,
    },
}
