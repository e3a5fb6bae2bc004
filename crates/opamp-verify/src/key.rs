//! Public keys, key ids and signature schemes.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::pkcs8::DecodePublicKey as _;
#[cfg(feature = "sign")]
use rsa::pkcs8::EncodePublicKey as _;
use sha2::{Digest, Sha256};
#[cfg(feature = "sign")]
use signature::Verifier as _;
use spki::der::pem::{self, LineEnding};
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use crate::error::{Result, VerifyError};
use crate::ring_rsa::RingRsaKey;

/// Object identifier of `rsaEncryption` keys.
pub(crate) const RSA_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// Object identifier of Ed25519 keys.
pub(crate) const ED25519_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// Smallest RSA modulus accepted for signing or verification.
pub const MIN_RSA_BITS: usize = 2048;

/// Identifies a key: the SHA-256 of its DER-encoded SubjectPublicKeyInfo.
///
/// Anyone holding the public key can recompute it, e.g.
/// `openssl pkey -pubin -in key.pub.pem -outform DER | sha256sum`. Displayed as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 32]);

impl KeyId {
    /// Wraps 32 bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Key id of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki_der(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The 32 id bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = VerifyError;

    fn from_str(s: &str) -> Result<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s, &mut bytes).map_err(|e| VerifyError::InvalidHex {
            what: "key id",
            reason: e.to_string(),
        })?;
        Ok(Self(bytes))
    }
}

/// A signature scheme, with its one-byte code in the signature envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// Ed25519 (RFC 8032, pure, strict verification). Code 1.
    Ed25519,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt. Code 2.
    RsaPssSha256,
    /// RSASSA-PKCS1-v1_5 with SHA-256. Code 3.
    RsaPkcs1v15Sha256,
}

impl Scheme {
    /// The scheme's code in the envelope.
    pub const fn code(self) -> u8 {
        match self {
            Self::Ed25519 => 1,
            Self::RsaPssSha256 => 2,
            Self::RsaPkcs1v15Sha256 => 3,
        }
    }

    /// The scheme with envelope code `code`.
    pub fn from_code(code: u8) -> Result<Self> {
        match code {
            1 => Ok(Self::Ed25519),
            2 => Ok(Self::RsaPssSha256),
            3 => Ok(Self::RsaPkcs1v15Sha256),
            _ => Err(VerifyError::UnsupportedScheme { code }),
        }
    }

    /// Stable lowercase name, as used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::RsaPssSha256 => "rsa-pss-sha256",
            Self::RsaPkcs1v15Sha256 => "rsa-pkcs1v15-sha256",
        }
    }

    pub(crate) const fn is_rsa(self) -> bool {
        matches!(self, Self::RsaPssSha256 | Self::RsaPkcs1v15Sha256)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = VerifyError;

    fn from_str(s: &str) -> Result<Self> {
        [Self::Ed25519, Self::RsaPssSha256, Self::RsaPkcs1v15Sha256]
            .into_iter()
            .find(|scheme| scheme.name() == s)
            .ok_or_else(|| VerifyError::UnknownSchemeName { name: s.to_owned() })
    }
}

/// The key material behind a [`PublicKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PublicKeyMaterial {
    Rsa(RsaPublic),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// An RSA public key as loaded: its SPKI DER, and what verifies with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RsaPublic {
    spki_der: Vec<u8>,
    /// `ring`'s form of the key, when it takes the key's shape.
    ring: Option<RingRsaKey>,
    /// The `rsa` crate's form, for keys `ring` does not take (feature `sign`).
    #[cfg(feature = "sign")]
    full: rsa::RsaPublicKey,
}

impl RsaPublic {
    /// Parses the key of an `rsaEncryption` SPKI (`spki_der`; `pkcs1_der` is its bit string).
    fn parse(spki_der: &[u8], pkcs1_der: &[u8]) -> Result<Self> {
        let invalid = |reason: String| VerifyError::InvalidKey {
            kind: "SPKI public key",
            reason,
        };
        let key = pkcs1::RsaPublicKey::try_from(pkcs1_der).map_err(|e| invalid(e.to_string()))?;
        let modulus = key.modulus.as_bytes();
        check_rsa_size(modulus.len() * 8)?;
        let modulus_bits = match modulus.first() {
            Some(&top) => modulus.len() * 8 - top.leading_zeros() as usize,
            None => 0,
        };
        let ring = RingRsaKey::for_key(pkcs1_der, modulus_bits, key.public_exponent.as_bytes());
        #[cfg(feature = "sign")]
        let full = {
            let spki =
                SubjectPublicKeyInfoRef::try_from(spki_der).map_err(|e| invalid(e.to_string()))?;
            rsa::RsaPublicKey::try_from(spki).map_err(|e| invalid(e.to_string()))?
        };
        #[cfg(not(feature = "sign"))]
        if ring.is_none() {
            return Err(invalid(
                "this RSA key needs opamp-verify's `sign` feature: without it only keys of \
                 2048 to 8192 bits with public exponent 65537 are verified"
                    .to_owned(),
            ));
        }
        Ok(Self {
            spki_der: spki_der.to_vec(),
            ring,
            #[cfg(feature = "sign")]
            full,
        })
    }

    fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> bool {
        if let Some(fast) = &self.ring {
            return fast.verify(scheme, message, signature);
        }
        #[cfg(feature = "sign")]
        {
            match scheme {
                Scheme::RsaPssSha256 => rsa::pss::Signature::try_from(signature).is_ok_and(|s| {
                    rsa::pss::VerifyingKey::<Sha256>::new(self.full.clone())
                        .verify(message, &s)
                        .is_ok()
                }),
                Scheme::RsaPkcs1v15Sha256 => rsa::pkcs1v15::Signature::try_from(signature)
                    .is_ok_and(|s| {
                        rsa::pkcs1v15::VerifyingKey::<Sha256>::new(self.full.clone())
                            .verify(message, &s)
                            .is_ok()
                    }),
                Scheme::Ed25519 => false,
            }
        }
        #[cfg(not(feature = "sign"))]
        {
            // Unreachable: `parse` refuses keys ring does not take without `sign`.
            let _ = (scheme, message, signature);
            false
        }
    }
}

/// A public key that verifies release signatures, with its [`KeyId`].
///
/// ```
/// use opamp_verify::PublicKey;
/// let pem = "-----BEGIN PUBLIC KEY-----\n\
///            MCowBQYDK2VwAyEAZ1OZUID24aj+XjHNrdVmq/KWct04EKOpFh2xw8eJ+FE=\n\
///            -----END PUBLIC KEY-----\n";
/// let key = PublicKey::from_spki_pem(pem)?;
/// assert_eq!(key.key_type(), "Ed25519");
/// assert_eq!(key.id().to_string().len(), 64);
/// # Ok::<(), opamp_verify::VerifyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    id: KeyId,
    material: PublicKeyMaterial,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an RSA or Ed25519 key.
    pub fn from_spki_pem(pem_text: &str) -> Result<Self> {
        let (label, der) =
            pem::decode_vec(pem_text.trim().as_bytes()).map_err(|e| VerifyError::InvalidKey {
                kind: "SPKI public key PEM",
                reason: e.to_string(),
            })?;
        if label != "PUBLIC KEY" {
            return Err(VerifyError::InvalidKey {
                kind: "SPKI public key PEM",
                reason: format!("expected label PUBLIC KEY, found {label}"),
            });
        }
        Self::from_spki_der(&der)
    }

    /// Parses a DER SubjectPublicKeyInfo holding an RSA or Ed25519 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let invalid = |reason: String| VerifyError::InvalidKey {
            kind: "SPKI public key",
            reason,
        };
        let spki = SubjectPublicKeyInfoRef::try_from(der).map_err(|e| invalid(e.to_string()))?;
        let material = match spki.algorithm.oid {
            RSA_OID => {
                PublicKeyMaterial::Rsa(RsaPublic::parse(der, spki.subject_public_key.raw_bytes())?)
            }
            ED25519_OID => PublicKeyMaterial::Ed25519(
                ed25519_dalek::VerifyingKey::from_public_key_der(der)
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            other => {
                return Err(VerifyError::UnsupportedKeyAlgorithm {
                    oid: other.to_string(),
                });
            }
        };
        Ok(Self::new(KeyId::of_spki_der(der), material))
    }

    /// The public half of a signing key.
    #[cfg(feature = "sign")]
    pub(crate) fn of_ed25519(key: ed25519_dalek::VerifyingKey) -> Result<Self> {
        let der = ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(&key).map_err(|e| {
            VerifyError::InvalidKey {
                kind: "public key",
                reason: e.to_string(),
            }
        })?;
        Ok(Self::new(
            KeyId::of_spki_der(der.as_bytes()),
            PublicKeyMaterial::Ed25519(key),
        ))
    }

    /// The public half of a signing key.
    #[cfg(feature = "sign")]
    pub(crate) fn of_rsa(key: &rsa::RsaPublicKey) -> Result<Self> {
        let der = key
            .to_public_key_der()
            .map_err(|e| VerifyError::InvalidKey {
                kind: "public key",
                reason: e.to_string(),
            })?;
        Self::from_spki_der(der.as_bytes())
    }

    fn new(id: KeyId, material: PublicKeyMaterial) -> Self {
        Self { id, material }
    }

    /// The key id (SHA-256 of the SPKI DER).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// "RSA" or "Ed25519".
    pub fn key_type(&self) -> &'static str {
        match self.material {
            PublicKeyMaterial::Rsa(_) => "RSA",
            PublicKeyMaterial::Ed25519(_) => "Ed25519",
        }
    }

    /// True when this key can verify signatures of `scheme`.
    pub fn supports(&self, scheme: Scheme) -> bool {
        match self.material {
            PublicKeyMaterial::Rsa(_) => scheme.is_rsa(),
            PublicKeyMaterial::Ed25519(_) => scheme == Scheme::Ed25519,
        }
    }

    /// The key as PEM `PUBLIC KEY` (SPKI), LF line endings.
    pub fn to_spki_pem(&self) -> Result<String> {
        let der = self.to_spki_der()?;
        pem::encode_string("PUBLIC KEY", LineEnding::LF, &der).map_err(|e| {
            VerifyError::InvalidKey {
                kind: "public key",
                reason: e.to_string(),
            }
        })
    }

    /// The key as DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>> {
        match &self.material {
            PublicKeyMaterial::Rsa(key) => Ok(key.spki_der.clone()),
            PublicKeyMaterial::Ed25519(key) => {
                ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_der(key)
                    .map(|d| d.into_vec())
                    .map_err(|e| VerifyError::InvalidKey {
                        kind: "public key",
                        reason: e.to_string(),
                    })
            }
        }
    }

    /// Checks `signature` over `message` with `scheme`.
    ///
    /// Fails with [`VerifyError::SchemeKeyMismatch`] when the scheme does not fit the key type
    /// and [`VerifyError::BadSignature`] when the signature does not verify.
    pub fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> Result<()> {
        let bad = || VerifyError::BadSignature {
            key_id: self.id,
            scheme,
        };
        match (&self.material, scheme) {
            (PublicKeyMaterial::Ed25519(key), Scheme::Ed25519) => {
                let signature =
                    ed25519_dalek::Signature::from_slice(signature).map_err(|_| bad())?;
                // Strict verification also refuses small-order keys and non-canonical encodings,
                // so one statement has exactly one accepted signature per key.
                key.verify_strict(message, &signature).map_err(|_| bad())
            }
            (PublicKeyMaterial::Rsa(key), Scheme::RsaPssSha256 | Scheme::RsaPkcs1v15Sha256) => {
                if key.verify(scheme, message, signature) {
                    Ok(())
                } else {
                    Err(bad())
                }
            }
            _ => Err(VerifyError::SchemeKeyMismatch {
                key_id: self.id,
                scheme,
                key_type: self.key_type(),
            }),
        }
    }
}

pub(crate) fn check_rsa_size(bits: usize) -> Result<()> {
    if bits < MIN_RSA_BITS {
        return Err(VerifyError::WeakKey {
            bits,
            minimum: MIN_RSA_BITS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2048-bit RSA key with public exponent 3 (`openssl genpkey ... rsa_keygen_pubexp:3`):
    /// a shape `ring` does not verify with.
    const EXPONENT_3_KEY: &str = include_str!("../tests/keys/rsa-exponent-3.pub.pem");

    #[cfg(feature = "sign")]
    #[test]
    fn unusual_rsa_keys_load_with_the_sign_feature() {
        let key = PublicKey::from_spki_pem(EXPONENT_3_KEY).unwrap();
        assert_eq!(key.key_type(), "RSA");
        // The key id covers the key as given, and the key writes back the same bytes.
        let der = key.to_spki_der().unwrap();
        assert_eq!(key.id(), KeyId::of_spki_der(&der));
        assert_eq!(PublicKey::from_spki_der(&der).unwrap(), key);
        assert!(matches!(
            key.verify(Scheme::RsaPssSha256, b"m", &[0; 256]),
            Err(VerifyError::BadSignature { .. })
        ));
    }

    #[cfg(not(feature = "sign"))]
    #[test]
    fn unusual_rsa_keys_are_refused_by_name_without_the_sign_feature() {
        let error = PublicKey::from_spki_pem(EXPONENT_3_KEY).unwrap_err();
        assert!(
            matches!(&error, VerifyError::InvalidKey { reason, .. } if reason.contains("`sign` feature")),
            "{error}"
        );
    }
}
