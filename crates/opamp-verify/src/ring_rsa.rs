//! RSA signature checks on `ring`'s arithmetic (assembly from BoringSSL), behind the same
//! `signature::Verifier` trait as the `rsa` crate's keys.
//!
//! The pure-Rust `rsa` crate verified about 8,000 signatures per second against OpenSSL's
//! 78,000 on the benchmark machine (docs/benchmarks.md). `ring` is already linked for TLS.
//! It takes the usual key shape (2048 to 8192 bits, public exponent 65537); any other key keeps
//! using `rsa`, so no key that verified before is refused now. For the shapes it takes, both
//! libraries implement the same checks: PKCS#1 v1.5 with SHA-256, and PSS with SHA-256, MGF1 and
//! a 32-byte salt (the `rsa` crate's `pss::VerifyingKey::new` default).

use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256, UnparsedPublicKey};
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::traits::PublicKeyParts as _;
use signature::SignatureEncoding as _;

/// The PKCS#1 `RSAPublicKey` encoding of a key `ring` can verify with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RingRsaKey {
    pkcs1_der: Vec<u8>,
}

impl RingRsaKey {
    /// `None` when `ring` does not take this key's size or exponent.
    pub(crate) fn for_key(key: &rsa::RsaPublicKey) -> Option<Self> {
        let bits = key.n().bits();
        if !(2048..=8192).contains(&bits) || key.e() != &rsa::BigUint::from(65_537u32) {
            return None;
        }
        let der = key.to_pkcs1_der().ok()?;
        Some(Self {
            pkcs1_der: der.into_vec(),
        })
    }

    fn check(
        &self,
        algorithm: &'static ring::signature::RsaParameters,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), signature::Error> {
        UnparsedPublicKey::new(algorithm, &self.pkcs1_der)
            .verify(message, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl signature::Verifier<rsa::pkcs1v15::Signature> for RingRsaKey {
    fn verify(
        &self,
        message: &[u8],
        signature: &rsa::pkcs1v15::Signature,
    ) -> Result<(), signature::Error> {
        self.check(&RSA_PKCS1_2048_8192_SHA256, message, &signature.to_bytes())
    }
}

impl signature::Verifier<rsa::pss::Signature> for RingRsaKey {
    fn verify(
        &self,
        message: &[u8],
        signature: &rsa::pss::Signature,
    ) -> Result<(), signature::Error> {
        self.check(&RSA_PSS_2048_8192_SHA256, message, &signature.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::SigningKey as Pkcs1SigningKey;
    use rsa::pss::BlindedSigningKey as PssSigningKey;
    use sha2::Sha256;
    use signature::{RandomizedSigner as _, Signer as _, Verifier as _};

    /// Both libraries must agree on every signature: valid, altered, or for another message.
    #[test]
    fn ring_and_rsa_agree() {
        let mut rng = rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
        let public = private.to_public_key();
        let fast = RingRsaKey::for_key(&public).unwrap();
        let message = b"release statement";

        let pkcs1 = Pkcs1SigningKey::<Sha256>::new(private.clone()).sign(message);
        let reference = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(public.clone());
        assert!(fast.verify(message, &pkcs1).is_ok());
        assert!(reference.verify(message, &pkcs1).is_ok());
        assert!(fast.verify(b"other statement", &pkcs1).is_err());
        let mut altered = pkcs1.to_vec();
        altered[10] ^= 1;
        let altered = rsa::pkcs1v15::Signature::try_from(altered.as_slice()).unwrap();
        assert!(fast.verify(message, &altered).is_err());
        assert!(reference.verify(message, &altered).is_err());

        let pss = PssSigningKey::<Sha256>::new(private).sign_with_rng(&mut rng, message);
        let reference = rsa::pss::VerifyingKey::<Sha256>::new(public);
        assert!(fast.verify(message, &pss).is_ok());
        assert!(reference.verify(message, &pss).is_ok());
        assert!(fast.verify(b"other statement", &pss).is_err());
        // A PKCS#1 v1.5 signature is not a PSS signature, in either library.
        let as_pss = rsa::pss::Signature::try_from(pkcs1.to_vec().as_slice()).unwrap();
        assert!(fast.verify(message, &as_pss).is_err());
        assert!(reference.verify(message, &as_pss).is_err());
    }

    #[test]
    fn unusual_keys_are_left_to_the_rsa_crate() {
        let mut rng = rand_core::OsRng;
        let small_exponent =
            rsa::RsaPrivateKey::new_with_exp(&mut rng, 2048, &rsa::BigUint::from(3u32)).unwrap();
        assert!(RingRsaKey::for_key(&small_exponent.to_public_key()).is_none());
        let short = rsa::RsaPrivateKey::new(&mut rng, 1024).unwrap();
        assert!(RingRsaKey::for_key(&short.to_public_key()).is_none());
    }
}
