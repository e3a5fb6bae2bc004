//! The agent-side trust policy.

use std::io::Read;
use std::sync::Arc;
use std::time::SystemTime;

use crate::error::{Result, VerifyError};
use crate::keyring::KeyRing;
use crate::statement::{DowngradeAuthorisation, parse_version, unix_seconds};
use crate::verified::{ApprovedPackage, Verified, VerifiedPackage};
use crate::verifier::{
    CompatibleVerifier, PackageToVerify, PackageVerifier, Provenance, SignedClaims,
    StatementVerifier,
};

/// Facts about the agent at verification time, passed in so the policy never reads a clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationContext {
    now: SystemTime,
    highest_installed: Option<semver::Version>,
}

impl VerificationContext {
    /// Verification at `now` for an agent that has never installed this package.
    pub fn new(now: SystemTime) -> Self {
        Self {
            now,
            highest_installed: None,
        }
    }

    /// The highest version of this package the agent has ever installed (anti-rollback).
    #[must_use]
    pub fn with_highest_installed(mut self, version: semver::Version) -> Self {
        self.highest_installed = Some(version);
        self
    }

    /// The time verification uses.
    pub fn now(&self) -> SystemTime {
        self.now
    }

    /// The highest installed version, if any.
    pub fn highest_installed(&self) -> Option<&semver::Version> {
        self.highest_installed.as_ref()
    }
}

/// What an agent accepts: trusted keys, whether signatures are required, whether compatible-mode
/// signatures count, and extra signature formats.
///
/// Defaults: signatures required, compatible mode off, anti-rollback on.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use opamp_verify::{
///     ContentHash, KeyRing, PackageToVerify, ReleaseSigner, Statement, TrustPolicy, TrustedKey,
///     VerificationContext,
/// };
///
/// // Release side.
/// let file = b"collector binary".to_vec();
/// let signer = ReleaseSigner::generate_ed25519()?;
/// let hash = ContentHash::of(&file);
/// let statement = Statement::new("otelcol", "1.2.0", hash, file.len() as u64,
///     UNIX_EPOCH + Duration::from_secs(2_000_000_000))?;
/// let signature = signer.sign_statement(&statement)?;
///
/// // Agent side.
/// let mut keys = KeyRing::new();
/// keys.trust(TrustedKey::new(signer.public_key().clone()));
/// let policy = TrustPolicy::new(keys);
/// let offer = PackageToVerify::new("otelcol", "1.2.0", hash.as_bytes(), &signature);
/// let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
///     .with_highest_installed("1.1.0".parse().unwrap());
/// let verified = policy.verify_package(&offer, &context, &file[..], 1 << 30)?;
/// assert_eq!(verified.version(), "1.2.0");
/// assert_eq!(verified.key_id(), Some(signer.key_id()));
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    keys: KeyRing,
    require_signature: bool,
    allow_compatible_mode: bool,
    verifiers: Vec<Arc<dyn PackageVerifier>>,
}

impl TrustPolicy {
    /// A policy trusting `keys`, requiring signatures, refusing compatible mode.
    pub fn new(keys: KeyRing) -> Self {
        Self {
            keys,
            require_signature: true,
            allow_compatible_mode: false,
            verifiers: Vec::new(),
        }
    }

    /// Accepts offers that carry no signature at all (default `false`: they are refused).
    /// Turning it on trusts whoever controls the server, or the network path to it, with the
    /// agent's binary; meant for test setups only, hence the name.
    #[must_use]
    pub fn dangerous_accept_unsigned(mut self, accept: bool) -> Self {
        self.require_signature = !accept;
        self
    }

    /// Whether bare RSA PKCS#1 v1.5 signatures over the content hash are accepted (default
    /// `false`). They protect the file bytes but not the version, so an old signed file can be
    /// replayed under a new version label; anti-rollback then only sees the offered label.
    #[must_use]
    pub fn allow_compatible_mode(mut self, allow: bool) -> Self {
        self.allow_compatible_mode = allow;
        self
    }

    /// Adds a signature format, tried after the built-in envelope and before compatible mode.
    #[must_use]
    pub fn with_verifier(mut self, verifier: Arc<dyn PackageVerifier>) -> Self {
        self.verifiers.push(verifier);
        self
    }

    /// The trusted keys.
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Checks an offer's signature and everything the policy demands except the file itself.
    ///
    /// Call before downloading; then check the file with
    /// [`Verified::verify_content`] or [`Verified::accept_hashed`].
    pub fn verify_offer(
        &self,
        offer: &PackageToVerify<'_>,
        context: &VerificationContext,
    ) -> Result<Verified<ApprovedPackage>> {
        let outcome = self
            .claims(offer, context)
            .and_then(|claims| approve(offer, &claims, context));
        match &outcome {
            Ok(approved) => tracing::debug!(
                package = offer.name(),
                version = offer.version(),
                provenance = %approved.provenance(),
                "package offer approved"
            ),
            Err(error) => tracing::warn!(
                package = offer.name(),
                version = offer.version(),
                %error,
                "package offer refused"
            ),
        }
        outcome.map(Verified::new)
    }

    /// [`verify_offer`](Self::verify_offer) then streams the file from `reader` (at most the
    /// signed size, never more than `max_size` bytes) and checks its size and SHA-256.
    pub fn verify_package<R: Read>(
        &self,
        offer: &PackageToVerify<'_>,
        context: &VerificationContext,
        reader: R,
        max_size: u64,
    ) -> Result<Verified<VerifiedPackage>> {
        self.verify_offer(offer, context)?
            .verify_content(reader, max_size)
    }

    fn claims(
        &self,
        offer: &PackageToVerify<'_>,
        context: &VerificationContext,
    ) -> Result<SignedClaims> {
        let signature = offer.signature();
        let offered_hash = offer.checked_content_hash()?;
        if signature.is_empty() {
            if self.require_signature {
                return Err(VerifyError::MissingSignature {
                    name: offer.name().to_owned(),
                    version: offer.version().to_owned(),
                });
            }
            return Ok(SignedClaims::new(Provenance::Unsigned, offered_hash));
        }
        let builtin = StatementVerifier;
        if builtin.recognises(signature) {
            return builtin.verify_signature(offer, &self.keys, context.now());
        }
        if let Some(verifier) = self.verifiers.iter().find(|v| v.recognises(signature)) {
            return verifier.verify_signature(offer, &self.keys, context.now());
        }
        // Name the format actually seen: a signature that cannot be a bare RSA signature is
        // not reported as one (and enabling compatible mode would not help).
        if !could_be_rsa_signature(signature) {
            return Err(VerifyError::UnrecognisedSignature {
                name: offer.name().to_owned(),
                version: offer.version().to_owned(),
                seen: describe_signature(signature),
            });
        }
        if !self.allow_compatible_mode {
            return Err(VerifyError::CompatibleModeDisabled {
                name: offer.name().to_owned(),
                version: offer.version().to_owned(),
            });
        }
        CompatibleVerifier.verify_signature(offer, &self.keys, context.now())
    }
}

/// Whether `signature` has the size of an RSA signature (the modulus size: 1024 to 8192 bits
/// in whole bytes, in practice a multiple of 16 bytes).
fn could_be_rsa_signature(signature: &[u8]) -> bool {
    (128..=1024).contains(&signature.len()) && signature.len().is_multiple_of(16)
}

/// A short description of a signature no verifier recognised, for the refusal message.
fn describe_signature(signature: &[u8]) -> String {
    let len = signature.len();
    if signature.starts_with(b"-----BEGIN") {
        let first = signature.split(|&b| b == b'\n').next().unwrap_or_default();
        return format!(
            "a PEM block ({}); OpAMP carries the signature bytes themselves",
            String::from_utf8_lossy(first).trim()
        );
    }
    let text = signature
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"+/=-_ \r\n".contains(b));
    if text {
        return format!(
            "{len} bytes of text (an encoded signature? OpAMP carries the signature bytes \
             themselves, not base64 or hex)"
        );
    }
    if len == 64 {
        return "64 raw bytes, the size of a bare Ed25519 signature, which names neither key nor \
                version"
            .to_owned();
    }
    format!("{len} bytes in no known format")
}

/// The checks every scheme shares: claims match the offer, expiry, anti-rollback.
fn approve(
    offer: &PackageToVerify<'_>,
    claims: &SignedClaims,
    context: &VerificationContext,
) -> Result<ApprovedPackage> {
    let offered_hash = offer.checked_content_hash()?;
    if !claims.content_hash.ct_eq(&offered_hash) {
        return Err(VerifyError::OfferHashMismatch {
            signed: claims.content_hash,
            offered: offered_hash,
        });
    }
    if let Some(signed) = &claims.name
        && signed != offer.name()
    {
        return Err(VerifyError::NameMismatch {
            signed: signed.clone(),
            offered: offer.name().to_owned(),
        });
    }
    if let Some(signed) = &claims.version
        && signed != offer.version()
    {
        return Err(VerifyError::VersionMismatch {
            signed: signed.clone(),
            offered: offer.version().to_owned(),
        });
    }
    if let Some(not_after) = claims.not_after {
        let now = unix_seconds(context.now());
        if now > not_after {
            return Err(VerifyError::Expired { now, not_after });
        }
    }
    let offered = parse_version(offer.version())?;
    let downgrade_authorised = match context.highest_installed() {
        // Precedence as semver defines it: build metadata does not order versions.
        Some(highest) if offered.cmp_precedence(highest).is_lt() => {
            check_downgrade(claims, highest, &offered)?;
            true
        }
        _ => false,
    };
    Ok(ApprovedPackage {
        name: offer.name().to_owned(),
        version: offer.version().to_owned(),
        semver: offered,
        content_hash: offered_hash,
        size: claims.size,
        provenance: claims.provenance.clone(),
        downgrade_authorised,
    })
}

fn check_downgrade(
    claims: &SignedClaims,
    highest_installed: &semver::Version,
    offered: &semver::Version,
) -> Result<()> {
    // A downgrade rule means nothing unless the version it applies to is signed as well.
    let rule = match (&claims.version, &claims.downgrade) {
        (Some(_), DowngradeAuthorisation::AllowFromAtMost(from)) => Some(from),
        _ => None,
    };
    match rule {
        Some(from) if highest_installed.cmp_precedence(from).is_le() => Ok(()),
        Some(from) => Err(VerifyError::DowngradeNotAuthorised {
            highest_installed: highest_installed.clone(),
            offered: offered.to_string(),
            authorised_from: from.clone(),
        }),
        None => Err(VerifyError::Rollback {
            highest_installed: highest_installed.clone(),
            offered: offered.clone(),
        }),
    }
}
