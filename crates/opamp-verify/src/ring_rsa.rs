//! RSA signature checks on `ring`'s arithmetic (assembly from BoringSSL).
//!
//! The pure-Rust `rsa` crate verified about 8,000 signatures per second against OpenSSL's
//! 78,000 on the benchmark machine (docs/benchmarks.md). `ring` is already linked for TLS.
//! It takes the usual key shape (2048 to 8192 bits, public exponent 65537). Any other key needs
//! the `rsa` crate, which only the `sign` feature brings; without it such keys are refused
//! when they are loaded. For the shapes it takes, both
//! libraries implement the same checks: PKCS#1 v1.5 with SHA-256, and PSS with SHA-256, MGF1 and
//! a 32-byte salt (the `rsa` crate's `pss::VerifyingKey::new` default).

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};

use crate::key::Scheme;

/// The PKCS#1 `RSAPublicKey` encoding of a key `ring` can verify with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingRsaKey {
    pkcs1_der: Vec<u8>,
}

impl RingRsaKey {
    /// `None` when `ring` does not take this key's size (`modulus_bits`) or exponent.
    pub(crate) fn for_key(pkcs1_der: &[u8], modulus_bits: usize, exponent: &[u8]) -> Option<Self> {
        if !(2048..=8192).contains(&modulus_bits) || exponent != [0x01, 0x00, 0x01] {
            return None;
        }
        Some(Self {
            pkcs1_der: pkcs1_der.to_vec(),
        })
    }

    /// Checks `signature` over `message`; `scheme` must be an RSA scheme.
    pub(crate) fn verify(&self, scheme: Scheme, message: &[u8], signature: &[u8]) -> bool {
        let algorithm = match scheme {
            Scheme::RsaPssSha256 => &RSA_PSS_2048_8192_SHA256,
            Scheme::RsaPkcs1v15Sha256 => &RSA_PKCS1_2048_8192_SHA256,
            Scheme::Ed25519 => return false,
        };
        UnparsedPublicKey::new(algorithm, &self.pkcs1_der)
            .verify(message, signature)
            .is_ok()
    }
}

#[cfg(all(test, feature = "sign"))]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPublicKey as _;
    use rsa::pkcs1v15::SigningKey as Pkcs1SigningKey;
    use rsa::pss::BlindedSigningKey as PssSigningKey;
    use rsa::traits::PublicKeyParts as _;
    use sha2::Sha256;
    use signature::{RandomizedSigner as _, SignatureEncoding as _, Signer as _, Verifier as _};

    fn ring_key(public: &rsa::RsaPublicKey) -> Option<RingRsaKey> {
        let der = public
            .to_pkcs1_der()
            .expect("a public key encodes as PKCS#1");
        RingRsaKey::for_key(der.as_bytes(), public.n().bits(), &public.e().to_bytes_be())
    }

    /// Both libraries must agree on every signature: valid, altered, or for another message.
    #[test]
    fn ring_and_rsa_agree() {
        let mut rng = rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let fast = ring_key(&public).unwrap();
        let message = b"release statement";
        let pkcs1_scheme = Scheme::RsaPkcs1v15Sha256;

        let pkcs1 = Pkcs1SigningKey::<Sha256>::new(private.clone()).sign(message);
        let reference = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public.clone());
        assert!(fast.verify(pkcs1_scheme, message, &pkcs1.to_bytes()));
        assert!(reference.verify(message, &pkcs1).is_ok());
        assert!(!fast.verify(pkcs1_scheme, b"other statement", &pkcs1.to_bytes()));
        let mut altered = pkcs1.to_vec();
        altered[10] ^= 1;
        assert!(!fast.verify(pkcs1_scheme, message, &altered));
        let altered = rsa::pkcs1v15::Signature::try_from(altered.as_slice()).unwrap();
        assert!(reference.verify(message, &altered).is_err());

        let pss = PssSigningKey::<Sha256>::new(private).sign_with_rng(&mut rng, message);
        let reference = rsa::pss::VerifyingKey::<Sha256>::new(public);
        assert!(fast.verify(Scheme::RsaPssSha256, message, &pss.to_bytes()));
        assert!(reference.verify(message, &pss).is_ok());
        assert!(!fast.verify(Scheme::RsaPssSha256, b"other statement", &pss.to_bytes()));
        // A PKCS#1 v1.5 signature is not a PSS signature, in either library.
        assert!(!fast.verify(Scheme::RsaPssSha256, message, &pkcs1.to_bytes()));
        let as_pss = rsa::pss::Signature::try_from(pkcs1.to_vec().as_slice()).unwrap();
        assert!(reference.verify(message, &as_pss).is_err());
    }

    #[test]
    fn unusual_keys_are_not_taken_by_ring() {
        let mut rng = rand_core::OsRng;
        let small_exponent =
            rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &rsa::BigUint::from(3u32)).unwrap();
        assert!(ring_key(&small_exponent.to_public_key()).is_none());
        let short = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        assert!(ring_key(&short.to_public_key()).is_none());
    }
}
