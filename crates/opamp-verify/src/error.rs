//! The crate's single error type.

use crate::key::{KeyId, Scheme};
use opamp_packages::ContentHash;

/// Everything that can go wrong while hashing, parsing, signing or verifying.
///
/// Every refusal of a package has its own variant, and each message names both sides (what was
/// signed or trusted, and what was offered or found) so an operator can act on it without
/// reading code. Times are unix seconds (UTC).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    // ---- content ----
    /// Reading or writing the package content failed.
    #[error("I/O error while {operation}")]
    Io {
        /// What was being done, e.g. "reading package content".
        operation: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The content is longer than the hard maximum size the caller allowed.
    #[error("content is larger than the maximum of {limit} bytes; refusing to read further")]
    TooLarge {
        /// The maximum size in bytes.
        limit: u64,
    },
    /// The content's SHA-256 is not the expected one.
    #[error("content hash mismatch: expected sha256 {expected}, got {actual}")]
    HashMismatch {
        /// The hash the content should have.
        expected: ContentHash,
        /// The hash the content has.
        actual: ContentHash,
    },
    /// The content is shorter than the size the signed statement names.
    #[error(
        "content size mismatch: signed statement says {signed} bytes, content has {actual} bytes"
    )]
    SizeMismatch {
        /// Size in the signed statement.
        signed: u64,
        /// Size of the content read.
        actual: u64,
    },
    /// The content is longer than the size the signed statement names.
    #[error("content is larger than the {signed} bytes the signed statement names")]
    LargerThanSigned {
        /// Size in the signed statement.
        signed: u64,
    },
    /// A content hash is not 32 bytes (SHA-256) long.
    #[error("content hash must be 32 bytes (SHA-256), got {length} bytes")]
    InvalidContentHash {
        /// The length found.
        length: usize,
    },
    /// A hex string could not be parsed as a hash or key id.
    #[error("invalid hex for {what}: {reason}")]
    InvalidHex {
        /// What was being parsed.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },

    // ---- keys ----
    /// A PEM or DER key could not be parsed.
    #[error("cannot parse {kind}: {reason}")]
    InvalidKey {
        /// What kind of key, e.g. "SPKI public key PEM".
        kind: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The key's algorithm is neither RSA nor Ed25519.
    #[error(
        "unsupported key algorithm {oid}; supported: RSA (1.2.840.113549.1.1.1), Ed25519 (1.3.101.112)"
    )]
    UnsupportedKeyAlgorithm {
        /// The algorithm object identifier found in the key.
        oid: String,
    },
    /// An RSA key is shorter than the accepted minimum.
    #[error("RSA key of {bits} bits is too weak; at least {minimum} bits are required")]
    WeakKey {
        /// The key's modulus size.
        bits: usize,
        /// The minimum accepted.
        minimum: usize,
    },
    /// A signature scheme was used with a key of the wrong type.
    #[error(
        "signature scheme {scheme} cannot be used with key {key_id}, which is a {key_type} key"
    )]
    SchemeKeyMismatch {
        /// The key's id.
        key_id: KeyId,
        /// The scheme requested.
        scheme: Scheme,
        /// The key's type, e.g. "Ed25519".
        key_type: &'static str,
    },
    /// Creating a signature or a key failed.
    #[error("signing failed: {reason}")]
    Signing {
        /// Why.
        reason: String,
    },

    // ---- envelope and statement encoding ----
    /// The signature envelope ends before a field is complete.
    #[error(
        "signature envelope truncated in {field}: needs {needed} more bytes, only {available} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// The signature envelope or a statement field breaks the format rules.
    #[error("malformed signature envelope: {field}: {reason}")]
    Malformed {
        /// The offending field.
        field: &'static str,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The envelope has a format version this build does not know.
    #[error(
        "unsupported signature envelope version {version}; this build reads version {supported}"
    )]
    UnsupportedEnvelopeVersion {
        /// The version found.
        version: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The envelope names a signature scheme this build does not know.
    #[error("unsupported signature scheme code {code}")]
    UnsupportedScheme {
        /// The scheme code found.
        code: u8,
    },
    /// A scheme name is not one of the supported names.
    #[error(
        "unknown signature scheme {name:?}; supported: ed25519, rsa-pss-sha256, rsa-pkcs1v15-sha256"
    )]
    UnknownSchemeName {
        /// The name given.
        name: String,
    },
    /// A version string is not a usable version ([`opamp_packages::parse_version`]).
    #[error("version {version:?} is unusable")]
    InvalidVersion {
        /// The version string.
        version: String,
        /// Why.
        #[source]
        source: opamp_packages::VersionError,
    },

    // ---- trust policy refusals ----
    /// The offer carries no signature but the policy requires one.
    #[error("package {name} {version} has no signature and the trust policy requires one")]
    MissingSignature {
        /// Offered package name.
        name: String,
        /// Offered version.
        version: String,
    },
    /// The signature is a bare compatible-mode signature but the policy does not accept those.
    #[error(
        "package {name} {version} carries a compatible-mode signature (RSA PKCS#1 v1.5 over the content hash only), which the trust policy does not accept; enable allow_compatible_mode or sign a statement"
    )]
    CompatibleModeDisabled {
        /// Offered package name.
        name: String,
        /// Offered version.
        version: String,
    },
    /// The signature is in no format this agent knows, and cannot be a compatible-mode RSA
    /// signature either (its size is no RSA modulus size).
    #[error(
        "package {name} {version} carries a signature in no format this agent knows: {seen}; expected a signed statement (`opamp package sign`) or, with allow_compatible_mode, a bare RSA signature"
    )]
    UnrecognisedSignature {
        /// Offered package name.
        name: String,
        /// Offered version.
        version: String,
        /// What the signature looks like.
        seen: String,
    },
    /// The signing key is not in the trusted set.
    #[error("signing key {key_id} is not trusted")]
    UnknownKey {
        /// The key id named by the signature.
        key_id: KeyId,
    },
    /// The signing key has been revoked.
    #[error("signing key {key_id} is revoked")]
    RevokedKey {
        /// The revoked key id.
        key_id: KeyId,
    },
    /// The signing key's trust has expired.
    #[error(
        "signing key {key_id} was trusted until {not_after} but it is now {now} (unix seconds)"
    )]
    KeyExpired {
        /// The key id.
        key_id: KeyId,
        /// End of the key's trust.
        not_after: u64,
        /// Current time passed in by the caller.
        now: u64,
    },
    /// The signed statement has expired.
    #[error("signed statement expired at {not_after} but it is now {now} (unix seconds)")]
    Expired {
        /// Current time passed in by the caller.
        now: u64,
        /// Expiry in the statement.
        not_after: u64,
    },
    /// A config signature was made for another config (its digest differs).
    #[error(
        "config digest mismatch: signed {signed}, offered {offered} (the config was changed after signing)"
    )]
    ConfigDigestMismatch {
        /// Digest in the signed statement.
        signed: ContentHash,
        /// Digest of the offered config.
        offered: ContentHash,
    },
    /// A config signature's selector does not match this agent.
    #[error("config is signed for agents with {key}={wanted}, but this agent has {}", actual.as_deref().map_or_else(|| format!("no {key}"), |a| format!("{key}={a}")))]
    ConfigNotForThisAgent {
        /// Selector key.
        key: String,
        /// Value the selector wants.
        wanted: String,
        /// This agent's value, if it has one.
        actual: Option<String>,
    },
    /// The signature does not verify with the named key.
    #[error("signature by key {key_id} ({scheme}) does not verify")]
    BadSignature {
        /// The key id.
        key_id: KeyId,
        /// The scheme.
        scheme: Scheme,
    },
    /// No trusted RSA key verifies a compatible-mode signature.
    #[error("{}", no_trusted_key_message(*tried))]
    NoTrustedKeyVerifies {
        /// How many trusted, unrevoked, unexpired RSA keys were tried.
        tried: usize,
    },
    /// The signed package name differs from the offered one.
    #[error("package name mismatch: signed {signed:?}, offered {offered:?}")]
    NameMismatch {
        /// Name in the signed statement.
        signed: String,
        /// Name in the offer.
        offered: String,
    },
    /// The signed version differs from the offered one.
    #[error("package version mismatch: signed {signed:?}, offered {offered:?}")]
    VersionMismatch {
        /// Version in the signed statement.
        signed: String,
        /// Version in the offer.
        offered: String,
    },
    /// The signed content hash differs from the offered `content_hash`.
    #[error("content hash mismatch: signed {signed}, offered {offered}")]
    OfferHashMismatch {
        /// Hash in the signed statement.
        signed: ContentHash,
        /// Hash in the offer.
        offered: ContentHash,
    },
    /// The offered version is lower than the highest installed one and nothing authorises that.
    #[error(
        "rollback refused: offered version {offered} is lower than the highest installed version {highest_installed} and the signature does not authorise a downgrade"
    )]
    Rollback {
        /// Highest version installed so far.
        highest_installed: semver::Version,
        /// Offered version.
        offered: semver::Version,
    },
    /// The statement authorises a downgrade, but not from a version as high as the installed one.
    #[error(
        "downgrade not authorised: offered version {offered} may replace versions up to {authorised_from}, but {highest_installed} has been installed"
    )]
    DowngradeNotAuthorised {
        /// Highest version installed so far.
        highest_installed: semver::Version,
        /// Offered version (text, to keep this error small).
        offered: String,
        /// Highest version the statement allows a downgrade from.
        authorised_from: semver::Version,
    },
    /// An embedder-supplied verifier refused the package.
    #[error("verifier {verifier} refused the package")]
    External {
        /// The verifier's name.
        verifier: String,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Result alias for this crate.
pub type Result<T, E = VerifyError> = std::result::Result<T, E>;

fn no_trusted_key_message(tried: usize) -> String {
    if tried == 0 {
        "compatible-mode signature cannot be checked: the trust policy has no usable RSA key \
         (compatible mode only verifies RSA PKCS#1 v1.5 signatures)"
            .to_owned()
    } else {
        format!(
            "compatible-mode signature does not verify with any of the {tried} trusted RSA keys"
        )
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        assert!(std::mem::size_of::<super::VerifyError>() < 128);
    }
}
