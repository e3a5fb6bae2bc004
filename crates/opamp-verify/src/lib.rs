#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod digest;
mod envelope;
mod error;
mod key;
mod keyring;
mod policy;
mod ring_rsa;
#[cfg(feature = "sign")]
mod signer;
mod statement;
mod verified;
mod verifier;
mod wire;

#[cfg(feature = "opamp-proto")]
pub use config::config_map_digest;
pub use config::{
    ApprovedConfig, CONFIG_DIGEST_DOMAIN, CONFIG_ENVELOPE_MAGIC, CONFIG_SIGNATURE_ENTRY,
    CONFIG_SIGNING_DOMAIN, ConfigEntry, ConfigSignature, ConfigStatement, MAX_SELECTOR_PAIRS,
    MAX_SELECTOR_TEXT_LEN, config_digest, verify_config,
};
#[cfg(feature = "tokio")]
pub use digest::hash_async_reader;
pub use digest::{
    ContentHasher, HASH_BUFFER_SIZE, HashedContent, HashingWriter, hash_reader, verify_reader,
};
pub use envelope::{
    ENVELOPE_MAGIC, ENVELOPE_VERSION, MAX_SIGNATURE_LEN, MAX_STATEMENT_LEN, SIGNING_DOMAIN,
    SignatureEnvelope,
};
pub use error::{Result, VerifyError};
pub use key::{KeyId, MIN_RSA_BITS, PublicKey, Scheme};
pub use keyring::{KeyRing, TrustedKey};
/// The one content-hash type of the workspace, defined in `opamp-packages`.
pub use opamp_packages::ContentHash;
pub use policy::{TrustPolicy, VerificationContext};
#[cfg(feature = "sign")]
pub use signer::{PrivateKeyPem, ReleaseSigner};
pub use statement::{DowngradeAuthorisation, MAX_NAME_LEN, MAX_VERSION_LEN, Statement};
pub use verified::{ApprovedPackage, Verified, VerifiedPackage};
pub use verifier::{
    CompatibleVerifier, PackageToVerify, PackageVerifier, Provenance, SignedClaims,
    StatementVerifier,
};
