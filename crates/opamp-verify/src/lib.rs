//! Package verification for OpAMP agents and the release tooling that feeds them.
//!
//! An OpAMP server offers packages as `PackageAvailable { version, file: DownloadableFile {
//! content_hash, signature, .. } }`. This crate decides whether an agent may install one:
//!
//! - [`hash_reader`], [`verify_reader`], [`HashingWriter`], [`ContentHasher`] (and
//!   `hash_async_reader` with the `tokio` feature): streaming SHA-256 with a hard size limit and
//!   constant-time comparison.
//! - [`ReleaseSigner`] (release side) signs a [`Statement`] (name, version, content hash, size,
//!   expiry, downgrade rule) into a [`SignatureEnvelope`] with Ed25519, RSA-PSS/SHA-256 or RSA
//!   PKCS#1 v1.5/SHA-256, or makes a compatible-mode signature over the content hash only.
//! - [`TrustPolicy`] (agent side) checks an offer against trusted keys ([`KeyRing`]), expiry and
//!   anti-rollback, then the downloaded file, and returns [`Verified<VerifiedPackage>`], which
//!   only this crate can build. Installing code should accept nothing else.
//! - [`PackageVerifier`] lets embedders add signature formats (e.g. cosign bundles).
//!
//! RSA signatures of the usual shape (2048 to 8192 bits, exponent 65537) are checked with
//! `ring`'s arithmetic, about ten times faster than the pure-Rust `rsa` crate, which handles
//! every other RSA key; both sit behind the `signature::Verifier` trait.
//!
//! The crate does no I/O of its own beyond the readers and writers handed in, and never reads
//! the clock: callers pass `now`. The byte layout of the envelope is documented on
//! [`SignatureEnvelope`] and in the crate's README.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use opamp_verify::*;
//!
//! let file = b"new collector".to_vec();
//! let hash = ContentHash::of(&file);
//! let signer = ReleaseSigner::generate_ed25519(&mut rand_core::OsRng)?;
//! let expiry = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
//! let signature = signer.sign_statement(&Statement::new("otelcol", "2.0.0", hash, 13, expiry)?)?;
//!
//! let mut keys = KeyRing::new();
//! keys.trust(TrustedKey::new(PublicKey::from_spki_pem(&signer.public_key().to_spki_pem()?)?));
//! let policy = TrustPolicy::new(keys);
//! let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000))
//!     .with_highest_installed("2.1.0".parse().unwrap());
//! let offer = PackageOffer::new("otelcol", "2.0.0", hash.as_bytes(), &signature);
//! // 2.0.0 is lower than the installed 2.1.0 and the statement does not authorise a downgrade.
//! assert!(matches!(
//!     policy.verify_package(&offer, &context, &file[..], 1 << 30),
//!     Err(VerifyError::Rollback { .. })
//! ));
//! # Ok::<(), VerifyError>(())
//! ```
#![forbid(unsafe_code)]

mod digest;
mod envelope;
mod error;
mod key;
mod keyring;
mod policy;
mod ring_rsa;
mod signer;
mod statement;
mod verified;
mod verifier;
mod wire;

#[cfg(feature = "tokio")]
pub use digest::hash_async_reader;
pub use digest::{
    ContentHash, ContentHasher, HASH_BUFFER_SIZE, HashedContent, HashingWriter, hash_reader,
    verify_reader,
};
pub use envelope::{
    ENVELOPE_MAGIC, ENVELOPE_VERSION, MAX_SIGNATURE_LEN, MAX_STATEMENT_LEN, SIGNING_DOMAIN,
    SignatureEnvelope,
};
pub use error::{Result, VerifyError};
pub use key::{KeyId, MIN_RSA_BITS, PublicKey, Scheme};
pub use keyring::{KeyRing, TrustedKey};
pub use policy::{TrustPolicy, VerificationContext};
/// The random-number traits (and `OsRng`) that [`ReleaseSigner`]'s key generation takes, re-exported
/// so callers use the matching version: `ReleaseSigner::generate_ed25519(&mut opamp_verify::rand_core::OsRng)`.
pub use rand_core;
pub use signer::ReleaseSigner;
pub use spki::der::zeroize::Zeroizing;
pub use statement::{
    DowngradeAuthorisation, MAX_NAME_LEN, MAX_VERSION_LEN, Statement, parse_version,
};
pub use verified::{ApprovedPackage, Verified, VerifiedPackage};
pub use verifier::{
    CompatibleVerifier, PackageOffer, PackageVerifier, Provenance, SignedClaims, StatementVerifier,
};
