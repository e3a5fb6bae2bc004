//! Proof values: only this crate can build them, so holding one means verification passed.

use std::io::{Read, Write};
use std::ops::Deref;

use crate::digest::{HashedContent, HashingWriter, hash_reader};
use crate::error::{Result, VerifyError};
use crate::key::KeyId;
use crate::verifier::Provenance;
use opamp_packages::ContentHash;

/// A value that passed verification. Its field is private, so code outside this crate can read
/// it but never build one.
///
/// Installing code should accept only `Verified<VerifiedPackage>`: then no path exists that
/// installs a file whose signature, policy checks and content hash were not all checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    pub(crate) fn new(inner: T) -> Self {
        Self(inner)
    }

    /// The verified value.
    pub fn get(&self) -> &T {
        &self.0
    }

    /// Gives up the proof and returns the plain value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// An offer whose signature and policy checks passed; its file has not been checked yet.
///
/// Download the file, then turn this into a [`VerifiedPackage`] with
/// [`Verified::verify_content`] or [`Verified::accept_hashed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovedPackage {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) semver: semver::Version,
    pub(crate) content_hash: ContentHash,
    pub(crate) size: Option<u64>,
    pub(crate) provenance: Provenance,
    pub(crate) downgrade_authorised: bool,
}

impl ApprovedPackage {
    /// Package name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Version text as offered.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The parsed version.
    pub fn semver(&self) -> &semver::Version {
        &self.semver
    }

    /// The content hash the file must have.
    pub fn content_hash(&self) -> ContentHash {
        self.content_hash
    }

    /// The signed size, when the scheme signs one.
    pub fn signed_size(&self) -> Option<u64> {
        self.size
    }

    /// Who vouched for the package.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// True when this is a downgrade the signed statement authorised.
    pub fn downgrade_authorised(&self) -> bool {
        self.downgrade_authorised
    }

    /// The most bytes to download: the signed size if any, never more than `max_size`.
    pub fn download_limit(&self, max_size: u64) -> u64 {
        self.size.map_or(max_size, |size| size.min(max_size))
    }
}

/// A package file whose signature, policy checks, size and content hash all passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPackage {
    approved: ApprovedPackage,
    size: u64,
}

impl VerifiedPackage {
    /// Package name.
    pub fn name(&self) -> &str {
        &self.approved.name
    }

    /// Version text as offered (and signed, in default mode).
    pub fn version(&self) -> &str {
        &self.approved.version
    }

    /// The parsed version.
    pub fn semver(&self) -> &semver::Version {
        &self.approved.semver
    }

    /// SHA-256 of the file.
    pub fn content_hash(&self) -> ContentHash {
        self.approved.content_hash
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Who vouched for the package.
    pub fn provenance(&self) -> &Provenance {
        &self.approved.provenance
    }

    /// Id of the signing key, for built-in schemes.
    pub fn key_id(&self) -> Option<KeyId> {
        match self.approved.provenance {
            Provenance::Statement { key_id, .. } | Provenance::Compatible { key_id } => {
                Some(key_id)
            }
            _ => None,
        }
    }

    /// True when installing it is a downgrade the signed statement authorised.
    pub fn downgrade_authorised(&self) -> bool {
        self.approved.downgrade_authorised
    }
}

impl Verified<ApprovedPackage> {
    /// Streams the file from `reader` (at most the signed size, never more than `max_size`) and
    /// checks its size and SHA-256.
    pub fn verify_content<R: Read>(
        self,
        reader: R,
        max_size: u64,
    ) -> Result<Verified<VerifiedPackage>> {
        let limit = self.0.download_limit(max_size);
        let hashed = hash_reader(reader, limit).map_err(|e| match (e, self.0.size) {
            (VerifyError::TooLarge { .. }, Some(signed)) if signed <= max_size => {
                VerifyError::LargerThanSigned { signed }
            }
            (other, _) => other,
        })?;
        self.accept_hashed(hashed)
    }

    /// A [`HashingWriter`] around `inner` that accepts at most
    /// [`download_limit(max_size)`](ApprovedPackage::download_limit) bytes: write the download
    /// through it, then pass the result of [`HashingWriter::finish`] to
    /// [`accept_hashed`](Self::accept_hashed).
    pub fn hashing_writer<W: Write>(&self, inner: W, max_size: u64) -> HashingWriter<W> {
        HashingWriter::new(inner, self.0.download_limit(max_size))
    }

    /// Checks the outcome of hashing the file elsewhere (e.g. with a
    /// [`HashingWriter`] while writing it to disk).
    ///
    /// ```
    /// use std::io::Write;
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use opamp_verify::*;
    ///
    /// let file = b"collector".to_vec();
    /// let hash = ContentHash::of(&file);
    /// let signer = ReleaseSigner::generate_ed25519()?;
    /// let expiry = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    /// let signature = signer.sign_statement(&Statement::new("otelcol", "1.0.0", hash, 9, expiry)?)?;
    /// let mut keys = KeyRing::new();
    /// keys.trust(TrustedKey::new(signer.public_key().clone()));
    ///
    /// let offer = PackageToVerify::new("otelcol", "1.0.0", hash.as_bytes(), &signature);
    /// let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    /// let approved = TrustPolicy::new(keys).verify_offer(&offer, &context)?;
    /// // Stream the download to disk (a Vec here) and hash it in the same pass.
    /// let mut writer = approved.hashing_writer(Vec::new(), 1 << 30);
    /// writer.write_all(&file).map_err(|e| VerifyError::Io { operation: "writing", source: e })?;
    /// let (_on_disk, hashed) = writer.finish()?;
    /// let verified: Verified<VerifiedPackage> = approved.accept_hashed(hashed)?;
    /// assert_eq!(verified.size(), 9);
    /// # Ok::<(), VerifyError>(())
    /// ```
    pub fn accept_hashed(self, hashed: HashedContent) -> Result<Verified<VerifiedPackage>> {
        if let Some(signed) = self.0.size {
            if hashed.len() > signed {
                return Err(VerifyError::LargerThanSigned { signed });
            }
            if hashed.len() < signed {
                return Err(VerifyError::SizeMismatch {
                    signed,
                    actual: hashed.len(),
                });
            }
        }
        let hashed = hashed.expect_hash(&self.0.content_hash)?;
        Ok(Verified(VerifiedPackage {
            approved: self.0,
            size: hashed.len(),
        }))
    }
}
