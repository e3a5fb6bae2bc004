//! The `PackageVerifier` extension point, the claims verifiers return, and the built-in schemes.

use std::fmt;
use std::time::SystemTime;

use crate::envelope::SignatureEnvelope;
use crate::error::{Result, VerifyError};
use crate::key::{KeyId, Scheme};
use crate::keyring::KeyRing;
use crate::statement::{DowngradeAuthorisation, unix_seconds};
use opamp_packages::ContentHash;

/// What the server offers for one package: the fields of `PackageAvailable` that verification
/// needs, borrowed from the decoded message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackageToVerify<'a> {
    name: &'a str,
    version: &'a str,
    content_hash: &'a [u8],
    signature: &'a [u8],
}

impl<'a> PackageToVerify<'a> {
    /// An offer: package name (the `PackagesAvailable.packages` map key), `version`,
    /// `file.content_hash` and `file.signature`.
    pub fn new(
        name: &'a str,
        version: &'a str,
        content_hash: &'a [u8],
        signature: &'a [u8],
    ) -> Self {
        Self {
            name,
            version,
            content_hash,
            signature,
        }
    }

    /// The offer for package `name` (its key in `PackagesAvailable.packages`).
    ///
    /// A missing `file` gives an empty content hash, which verification refuses.
    ///
    /// ```
    /// use opamp_proto::v1::{DownloadableFile, PackageAvailable};
    /// use opamp_verify::PackageToVerify;
    /// let available = PackageAvailable {
    ///     version: "1.2.0".into(),
    ///     file: Some(DownloadableFile { content_hash: vec![7; 32], ..Default::default() }),
    ///     ..Default::default()
    /// };
    /// let offer = PackageToVerify::from_available("otelcol", &available);
    /// assert_eq!(offer.version(), "1.2.0");
    /// assert!(offer.signature().is_empty());
    /// ```
    #[cfg(feature = "opamp-proto")]
    pub fn from_available(name: &'a str, available: &'a opamp_proto::v1::PackageAvailable) -> Self {
        let (content_hash, signature) =
            available.file.as_ref().map_or((&[][..], &[][..]), |file| {
                (file.content_hash.as_slice(), file.signature.as_slice())
            });
        Self::new(name, &available.version, content_hash, signature)
    }

    /// Package name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Offered version.
    pub fn version(&self) -> &'a str {
        self.version
    }

    /// Offered `content_hash` bytes (should be a 32-byte SHA-256).
    pub fn content_hash(&self) -> &'a [u8] {
        self.content_hash
    }

    /// Offered `content_hash` as a [`ContentHash`].
    ///
    /// # Errors
    /// [`VerifyError::InvalidContentHash`] unless it is 32 bytes long.
    pub fn checked_content_hash(&self) -> Result<ContentHash> {
        ContentHash::from_slice(self.content_hash).map_err(|_| VerifyError::InvalidContentHash {
            length: self.content_hash.len(),
        })
    }

    /// Offered `signature` bytes (may be empty).
    pub fn signature(&self) -> &'a [u8] {
        self.signature
    }
}

/// Who vouched for a package.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provenance {
    /// A signed statement in an opamp-verify envelope.
    Statement {
        /// The signing key.
        key_id: KeyId,
        /// The scheme used.
        scheme: Scheme,
    },
    /// A compatible-mode signature (RSA PKCS#1 v1.5 over the content hash only).
    Compatible {
        /// The trusted key that verified it.
        key_id: KeyId,
    },
    /// No signature; accepted only because the policy does not require one.
    Unsigned,
    /// An embedder-supplied [`PackageVerifier`].
    External {
        /// The verifier's name.
        verifier: String,
        /// Who signed, in the verifier's terms (e.g. a certificate identity).
        signer: String,
    },
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Statement { key_id, scheme } => {
                write!(f, "statement signed by {key_id} ({scheme})")
            }
            Self::Compatible { key_id } => write!(f, "compatible-mode signature by {key_id}"),
            Self::Unsigned => f.write_str("unsigned"),
            Self::External { verifier, signer } => write!(f, "{verifier} signature by {signer}"),
        }
    }
}

/// What a verified signature vouches for. Fields left `None` were not signed, and the trust
/// policy then relies on the offer for them (compatible mode signs only the content hash).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SignedClaims {
    /// Who vouched.
    pub provenance: Provenance,
    /// The content hash the signature covers.
    pub content_hash: ContentHash,
    /// Signed package name.
    pub name: Option<String>,
    /// Signed version text.
    pub version: Option<String>,
    /// Signed file size in bytes.
    pub size: Option<u64>,
    /// Signed expiry, unix seconds.
    pub not_after: Option<u64>,
    /// Signed downgrade rule.
    pub downgrade: DowngradeAuthorisation,
}

impl SignedClaims {
    /// Claims covering only a content hash.
    pub fn new(provenance: Provenance, content_hash: ContentHash) -> Self {
        Self {
            provenance,
            content_hash,
            name: None,
            version: None,
            size: None,
            not_after: None,
            downgrade: DowngradeAuthorisation::Forbidden,
        }
    }

    /// Adds a signed package name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a signed version.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Adds a signed size.
    #[must_use]
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    /// Adds a signed expiry.
    #[must_use]
    pub fn with_not_after(mut self, not_after: SystemTime) -> Self {
        self.not_after = Some(unix_seconds(not_after));
        self
    }

    /// Adds a signed downgrade rule (only honoured when the version is signed too).
    #[must_use]
    pub fn with_downgrade(mut self, downgrade: DowngradeAuthorisation) -> Self {
        self.downgrade = downgrade;
        self
    }
}

/// A signature format: recognises its signatures and checks them.
///
/// A verifier only answers "which claims does a trusted signer make about this offer?". The
/// [`TrustPolicy`](crate::TrustPolicy) then applies the same checks to every scheme (claims match
/// the offer, expiry, anti-rollback, content hash of the downloaded file) and alone builds the
/// [`Verified`](crate::Verified) value installing code needs. Embedders add formats such as
/// cosign/Sigstore bundles with [`TrustPolicy::with_verifier`](crate::TrustPolicy::with_verifier).
///
/// ```
/// use std::time::SystemTime;
/// use opamp_verify::{
///     KeyRing, PackageToVerify, PackageVerifier, Provenance, SignedClaims, VerifyError,
/// };
///
/// /// Accepts signatures of the form `DEMO:<signer>` (for illustration only!).
/// #[derive(Debug)]
/// struct DemoVerifier;
///
/// impl PackageVerifier for DemoVerifier {
///     fn name(&self) -> &str { "demo" }
///     fn recognises(&self, signature: &[u8]) -> bool { signature.starts_with(b"DEMO:") }
///     fn verify_signature(&self, offer: &PackageToVerify<'_>, _keys: &KeyRing, _now: SystemTime)
///         -> Result<SignedClaims, VerifyError>
///     {
///         let signer = String::from_utf8_lossy(&offer.signature()[5..]).into_owned();
///         let hash = offer.checked_content_hash()?;
///         Ok(SignedClaims::new(Provenance::External { verifier: "demo".into(), signer }, hash)
///             .with_name(offer.name()))
///     }
/// }
/// ```
pub trait PackageVerifier: Send + Sync + fmt::Debug {
    /// Short name for logs and errors.
    fn name(&self) -> &str;

    /// True when `signature` is in this verifier's format. Checked in order; the first verifier
    /// that recognises a signature is the only one asked to verify it.
    fn recognises(&self, signature: &[u8]) -> bool;

    /// Checks the offer's signature and returns what it vouches for, or why it is refused.
    fn verify_signature(
        &self,
        offer: &PackageToVerify<'_>,
        keys: &KeyRing,
        now: SystemTime,
    ) -> Result<SignedClaims>;
}

/// Default mode: the versioned [`SignatureEnvelope`] holding a signed [`Statement`](crate::Statement).
#[derive(Clone, Copy, Debug, Default)]
pub struct StatementVerifier;

impl PackageVerifier for StatementVerifier {
    fn name(&self) -> &str {
        "opamp-statement-v1"
    }

    fn recognises(&self, signature: &[u8]) -> bool {
        SignatureEnvelope::is_envelope(signature)
    }

    fn verify_signature(
        &self,
        offer: &PackageToVerify<'_>,
        keys: &KeyRing,
        now: SystemTime,
    ) -> Result<SignedClaims> {
        let envelope = SignatureEnvelope::parse(offer.signature())?;
        let key = keys.usable(envelope.key_id(), now)?;
        key.verify(
            envelope.scheme(),
            &envelope.signed_message(),
            envelope.signature(),
        )?;
        let statement = envelope.statement();
        Ok(SignedClaims {
            provenance: Provenance::Statement {
                key_id: key.id(),
                scheme: envelope.scheme(),
            },
            content_hash: statement.content_hash(),
            name: Some(statement.name().to_owned()),
            version: Some(statement.version().to_owned()),
            size: Some(statement.size()),
            not_after: Some(statement.not_after()),
            downgrade: statement.downgrade().clone(),
        })
    }
}

/// Compatible mode: a bare RSA PKCS#1 v1.5/SHA-256 signature over the 32 content-hash bytes,
/// checked against every usable trusted RSA key (the format carries no key id).
///
/// It binds the file bytes only, so the policy still applies anti-rollback to the offered
/// version, but cannot authorise a downgrade.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatibleVerifier;

impl PackageVerifier for CompatibleVerifier {
    fn name(&self) -> &str {
        "compatible-rsa-pkcs1v15-sha256"
    }

    fn recognises(&self, signature: &[u8]) -> bool {
        !signature.is_empty() && !SignatureEnvelope::is_envelope(signature)
    }

    fn verify_signature(
        &self,
        offer: &PackageToVerify<'_>,
        keys: &KeyRing,
        now: SystemTime,
    ) -> Result<SignedClaims> {
        let content_hash = offer.checked_content_hash()?;
        let scheme = Scheme::RsaPkcs1v15Sha256;
        let verifies = |key: &crate::PublicKey| {
            key.supports(scheme)
                && key
                    .verify(scheme, content_hash.as_bytes(), offer.signature())
                    .is_ok()
        };
        let mut tried = 0;
        for key in keys.usable_keys(now).filter(|k| k.supports(scheme)) {
            tried += 1;
            if verifies(key) {
                return Ok(SignedClaims::new(
                    Provenance::Compatible { key_id: key.id() },
                    content_hash,
                ));
            }
        }
        // Say precisely why when the signer is known but no longer usable.
        if let Some((_, reason)) = keys.unusable_keys(now).find(|(key, _)| verifies(key)) {
            return Err(reason);
        }
        Err(VerifyError::NoTrustedKeyVerifies { tried })
    }
}
