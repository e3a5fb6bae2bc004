//! The release side: keys that sign statements (and compatible-mode signatures).

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand_core::OsRng;
use rsa::traits::PublicKeyParts as _;
use sha2::Sha256;
use signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _};
use spki::der::pem::{self, LineEnding};
use spki::der::zeroize::Zeroizing;

use crate::config::{ConfigSignature, ConfigStatement, config_signed_message};
use crate::envelope::{SignatureEnvelope, signed_message};
use crate::error::{Result, VerifyError};
use crate::key::{ED25519_OID, KeyId, PublicKey, RSA_OID, Scheme, check_rsa_size};
use crate::statement::Statement;
use opamp_packages::ContentHash;

enum SigningMaterial {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(Box<ed25519_dalek::SigningKey>),
}

/// A release signing key with the scheme it signs statements with.
///
/// Keep it offline: the OpAMP server only relays the signatures it makes, so a compromised
/// server cannot make agents run a file this key did not sign.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use opamp_verify::{ContentHash, PublicKey, ReleaseSigner, Statement};
/// let signer = ReleaseSigner::generate_ed25519()?;
/// let private_pem = signer.to_pkcs8_pem()?;          // store this securely
/// let public_pem = signer.public_key().to_spki_pem()?; // hand this to agents
/// let reloaded = ReleaseSigner::from_pkcs8_pem(&private_pem, None)?;
/// assert_eq!(reloaded.key_id(), PublicKey::from_spki_pem(&public_pem)?.id());
/// let envelope = reloaded.sign_statement(&Statement::new(
///     "otelcol", "1.0.0", ContentHash::of(b"bin"), 3,
///     UNIX_EPOCH + Duration::from_secs(2_000_000_000))?)?;
/// assert!(envelope.starts_with(b"OPAMPSIG"));
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
pub struct ReleaseSigner {
    material: SigningMaterial,
    scheme: Scheme,
    public: PublicKey,
}

impl std::fmt::Debug for ReleaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseSigner")
            .field("key_id", &self.public.id())
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl ReleaseSigner {
    /// A fresh Ed25519 key from the operating system's random source.
    pub fn generate_ed25519() -> Result<Self> {
        Self::ed25519_from_key(ed25519_dalek::SigningKey::generate(&mut OsRng))
    }

    /// The Ed25519 key whose 32-byte secret is `secret` (RFC 8032). Deterministic, for tests
    /// and for keys kept as raw secrets; [`generate_ed25519`](Self::generate_ed25519) makes a
    /// fresh one.
    pub fn ed25519_from_secret(secret: &[u8; 32]) -> Result<Self> {
        Self::ed25519_from_key(ed25519_dalek::SigningKey::from_bytes(secret))
    }

    fn ed25519_from_key(key: ed25519_dalek::SigningKey) -> Result<Self> {
        let public = PublicKey::of_ed25519(key.verifying_key())?;
        Ok(Self {
            material: SigningMaterial::Ed25519(Box::new(key)),
            scheme: Scheme::Ed25519,
            public,
        })
    }

    /// A fresh RSA key of `bits` bits (at least 2048) signing with `scheme` (an RSA scheme),
    /// from the operating system's random source.
    pub fn generate_rsa(bits: usize, scheme: Scheme) -> Result<Self> {
        check_rsa_size(bits)?;
        let key = rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|e| VerifyError::Signing {
            reason: format!("RSA key generation failed: {e}"),
        })?;
        Self::from_rsa(key, scheme)
    }

    /// Loads a PEM `PRIVATE KEY` (unencrypted PKCS#8) holding an RSA or Ed25519 key.
    ///
    /// `scheme` defaults to Ed25519 for Ed25519 keys and RSA-PSS/SHA-256 for RSA keys.
    pub fn from_pkcs8_pem(pem_text: &str, scheme: Option<Scheme>) -> Result<Self> {
        let invalid = |reason: String| VerifyError::InvalidKey {
            kind: "PKCS#8 private key PEM",
            reason,
        };
        let (label, der) =
            pem::decode_vec(pem_text.trim().as_bytes()).map_err(|e| invalid(e.to_string()))?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(invalid(format!(
                "expected label PRIVATE KEY, found {label}"
            )));
        }
        let info =
            pkcs8::PrivateKeyInfo::try_from(der.as_slice()).map_err(|e| invalid(e.to_string()))?;
        match info.algorithm.oid {
            RSA_OID => {
                let key = rsa::RsaPrivateKey::try_from(info).map_err(|e| invalid(e.to_string()))?;
                Self::from_rsa(key, scheme.unwrap_or(Scheme::RsaPssSha256))
            }
            ED25519_OID => {
                let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| invalid(e.to_string()))?;
                let public = PublicKey::of_ed25519(key.verifying_key())?;
                match scheme.unwrap_or(Scheme::Ed25519) {
                    Scheme::Ed25519 => Ok(Self {
                        material: SigningMaterial::Ed25519(Box::new(key)),
                        scheme: Scheme::Ed25519,
                        public,
                    }),
                    other => Err(VerifyError::SchemeKeyMismatch {
                        key_id: public.id(),
                        scheme: other,
                        key_type: "Ed25519",
                    }),
                }
            }
            other => Err(VerifyError::UnsupportedKeyAlgorithm {
                oid: other.to_string(),
            }),
        }
    }

    fn from_rsa(key: rsa::RsaPrivateKey, scheme: Scheme) -> Result<Self> {
        check_rsa_size(key.size() * 8)?;
        let public = PublicKey::of_rsa(&key.to_public_key())?;
        if !scheme.is_rsa() {
            return Err(VerifyError::SchemeKeyMismatch {
                key_id: public.id(),
                scheme,
                key_type: "RSA",
            });
        }
        Ok(Self {
            material: SigningMaterial::Rsa(Box::new(key)),
            scheme,
            public,
        })
    }

    /// The private key as PEM `PRIVATE KEY` (unencrypted PKCS#8), wiped from memory on drop.
    pub fn to_pkcs8_pem(&self) -> Result<PrivateKeyPem> {
        match &self.material {
            SigningMaterial::Rsa(key) => {
                rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(key.as_ref(), LineEnding::LF)
            }
            SigningMaterial::Ed25519(key) => key.to_pkcs8_pem(LineEnding::LF),
        }
        .map(PrivateKeyPem)
        .map_err(|e| VerifyError::InvalidKey {
            kind: "PKCS#8 private key",
            reason: e.to_string(),
        })
    }

    /// The matching public key (give its PEM to agents' trust policies).
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The key id agents see in envelopes.
    pub fn key_id(&self) -> KeyId {
        self.public.id()
    }

    /// The scheme statements are signed with.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Signs `statement`; returns the envelope bytes for `DownloadableFile.signature`.
    pub fn sign_statement(&self, statement: &Statement) -> Result<Vec<u8>> {
        let message = signed_message(self.scheme, self.key_id(), &statement.to_bytes());
        let signature = self.sign_raw(self.scheme, &message)?;
        Ok(
            SignatureEnvelope::assemble(self.scheme, self.key_id(), statement, signature)?
                .to_bytes(),
        )
    }

    /// Signs a config statement; returns the envelope bytes for the `opamp.signature`
    /// config-map entry (see [`crate::ConfigStatement`]).
    pub fn sign_config(&self, statement: &ConfigStatement) -> Result<Vec<u8>> {
        let message = config_signed_message(self.scheme, self.key_id(), &statement.to_bytes());
        let signature = self.sign_raw(self.scheme, &message)?;
        Ok(ConfigSignature::assemble(self.scheme, self.key_id(), statement, signature).to_bytes())
    }

    /// Compatible mode: RSA PKCS#1 v1.5/SHA-256 over the 32 content-hash bytes, as the Go
    /// `rsa.SignPKCS1v15(rand, key, crypto.SHA256, sha256(contentHash))` produces. RSA keys only.
    ///
    /// This binds the file bytes but not the name or version, so it cannot stop a replay of an
    /// older signed file; prefer [`sign_statement`](Self::sign_statement).
    pub fn sign_compatible(&self, content_hash: &ContentHash) -> Result<Vec<u8>> {
        self.sign_raw(Scheme::RsaPkcs1v15Sha256, content_hash.as_bytes())
    }

    fn sign_raw(&self, scheme: Scheme, message: &[u8]) -> Result<Vec<u8>> {
        let failed = |e: signature::Error| VerifyError::Signing {
            reason: e.to_string(),
        };
        match (&self.material, scheme) {
            (SigningMaterial::Ed25519(key), Scheme::Ed25519) => {
                Ok(key.try_sign(message).map_err(failed)?.to_vec())
            }
            (SigningMaterial::Rsa(key), Scheme::RsaPssSha256) => {
                // The blinded key randomises the private-key operation against timing attacks.
                let signer = rsa::pss::BlindedSigningKey::<Sha256>::new(key.as_ref().clone());
                Ok(signer
                    .try_sign_with_rng(&mut OsRng, message)
                    .map_err(failed)?
                    .to_vec())
            }
            (SigningMaterial::Rsa(key), Scheme::RsaPkcs1v15Sha256) => {
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.as_ref().clone());
                Ok(signer
                    .try_sign_with_rng(&mut OsRng, message)
                    .map_err(failed)?
                    .to_vec())
            }
            _ => Err(VerifyError::SchemeKeyMismatch {
                key_id: self.key_id(),
                scheme,
                key_type: self.public.key_type(),
            }),
        }
    }
}

/// The PEM text of a private key. Its memory is wiped when it is dropped; it derefs to `str`
/// and its `Debug` output hides the key.
pub struct PrivateKeyPem(Zeroizing<String>);

impl PrivateKeyPem {
    /// The PEM text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PrivateKeyPem {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for PrivateKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyPem(..)")
    }
}
