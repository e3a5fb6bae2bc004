//! Which `opamp_verify` errors are refusals (exit 3) and which are other failures.

use opamp_verify::VerifyError;

use crate::failure::Failure;

/// The exit code category of a verification error.
///
/// Everything about the package, its signature or the policy is a refusal; broken key files are
/// an operation failure (the operator must fix them); reading failures are I/O.
pub(super) fn classify(error: &VerifyError) -> Failure {
    match error {
        VerifyError::Io { .. } => Failure::Unreachable,
        VerifyError::InvalidKey { .. }
        | VerifyError::UnsupportedKeyAlgorithm { .. }
        | VerifyError::WeakKey { .. }
        | VerifyError::Signing { .. }
        | VerifyError::UnknownSchemeName { .. }
        | VerifyError::InvalidHex { .. } => Failure::Operation,
        VerifyError::TooLarge { .. }
        | VerifyError::HashMismatch { .. }
        | VerifyError::SizeMismatch { .. }
        | VerifyError::LargerThanSigned { .. }
        | VerifyError::InvalidContentHash { .. }
        | VerifyError::SchemeKeyMismatch { .. }
        | VerifyError::Truncated { .. }
        | VerifyError::Malformed { .. }
        | VerifyError::UnsupportedEnvelopeVersion { .. }
        | VerifyError::UnsupportedScheme { .. }
        | VerifyError::InvalidVersion { .. }
        | VerifyError::MissingSignature { .. }
        | VerifyError::CompatibleModeDisabled { .. }
        | VerifyError::UnknownKey { .. }
        | VerifyError::RevokedKey { .. }
        | VerifyError::KeyExpired { .. }
        | VerifyError::Expired { .. }
        | VerifyError::BadSignature { .. }
        | VerifyError::NoTrustedKeyVerifies { .. }
        | VerifyError::NameMismatch { .. }
        | VerifyError::VersionMismatch { .. }
        | VerifyError::OfferHashMismatch { .. }
        | VerifyError::Rollback { .. }
        | VerifyError::DowngradeNotAuthorised { .. }
        | VerifyError::External { .. } => Failure::Refused,
        // A refusal kind added later is still a refusal: fail closed.
        _ => Failure::Refused,
    }
}
