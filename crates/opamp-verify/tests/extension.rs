//! An embedder-supplied signature format goes through the same policy checks.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use opamp_verify::{
    ContentHash, KeyRing, PackageToVerify, PackageVerifier, Provenance, SignedClaims, TrustPolicy,
    VerificationContext, VerifyError,
};

/// Stands in for e.g. a cosign bundle verifier: `TEST-BUNDLE:<signed version>`.
#[derive(Debug)]
struct BundleVerifier;

impl PackageVerifier for BundleVerifier {
    fn name(&self) -> &str {
        "test-bundle"
    }

    fn recognises(&self, signature: &[u8]) -> bool {
        signature.starts_with(b"TEST-BUNDLE:")
    }

    fn verify_signature(
        &self,
        offer: &PackageToVerify<'_>,
        _keys: &KeyRing,
        _now: SystemTime,
    ) -> Result<SignedClaims, VerifyError> {
        let version =
            std::str::from_utf8(&offer.signature()[12..]).map_err(|e| VerifyError::External {
                verifier: self.name().to_owned(),
                source: Box::new(e),
            })?;
        Ok(SignedClaims::new(
            Provenance::External {
                verifier: self.name().to_owned(),
                signer: "release@example.invalid".to_owned(),
            },
            ContentHash::of(&file()),
        )
        .with_name("otelcol-contrib")
        .with_version(version))
    }
}

fn policy() -> TrustPolicy {
    TrustPolicy::new(KeyRing::new()).with_verifier(Arc::new(BundleVerifier))
}

#[test]
fn external_verifier_result_is_accepted_through_the_policy() {
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new(
        "otelcol-contrib",
        "1.2.0",
        hash.as_bytes(),
        b"TEST-BUNDLE:1.2.0",
    );
    let verified = policy()
        .verify_package(
            &offer,
            &VerificationContext::new(now()),
            &file()[..],
            1 << 20,
        )
        .unwrap();
    assert!(
        matches!(verified.provenance(), Provenance::External { verifier, .. } if verifier == "test-bundle")
    );
    assert_eq!(verified.key_id(), None);
}

#[test]
fn external_claims_are_still_checked_against_the_offer() {
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new(
        "otelcol-contrib",
        "1.3.0",
        hash.as_bytes(),
        b"TEST-BUNDLE:1.2.0",
    );
    let err = policy()
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap_err();
    assert!(matches!(err, VerifyError::VersionMismatch { .. }));
}

#[test]
fn external_errors_carry_the_verifier_name() {
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new(
        "otelcol-contrib",
        "1.2.0",
        hash.as_bytes(),
        b"TEST-BUNDLE:\xff",
    );
    let err = policy()
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap_err();
    assert!(err.to_string().starts_with("verifier test-bundle refused"));
}

#[test]
fn unrecognised_signatures_of_rsa_size_fall_to_compatible_mode() {
    let hash = ContentHash::of(&file());
    let raw = [0x5au8; 256];
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &raw);
    let err = policy()
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap_err();
    assert!(matches!(err, VerifyError::CompatibleModeDisabled { .. }));
}

/// A signature that cannot be a bare RSA signature is described as what it is, not as a
/// compatible-mode signature (which enabling compatible mode would not fix).
#[test]
fn other_unrecognised_signatures_are_described_as_seen() {
    let hash = ContentHash::of(&file());
    let cases: [(&[u8], &str); 4] = [
        (b"OTHER", "5 bytes of text"),
        (
            b"-----BEGIN SIGNATURE-----\nabc\n",
            "a PEM block (-----BEGIN SIGNATURE-----)",
        ),
        (&[0xa5; 64], "the size of a bare Ed25519 signature"),
        (&[0xa5; 77], "77 bytes in no known format"),
    ];
    for (signature, seen) in cases {
        let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), signature);
        let err = policy()
            .allow_compatible_mode(true)
            .verify_offer(&offer, &VerificationContext::new(now()))
            .unwrap_err();
        assert!(
            matches!(err, VerifyError::UnrecognisedSignature { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(seen), "{err}");
        assert!(
            !err.to_string().contains("compatible-mode signature ("),
            "{err}"
        );
    }
}

/// Compatible mode with no RSA key to check with says so instead of "0 trusted RSA keys".
#[test]
fn compatible_mode_without_rsa_keys_says_there_is_none() {
    let hash = ContentHash::of(&file());
    let raw = [0x5au8; 256];
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &raw);
    let err = policy()
        .allow_compatible_mode(true)
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap_err();
    assert!(
        matches!(err, VerifyError::NoTrustedKeyVerifies { tried: 0 }),
        "{err}"
    );
    assert!(err.to_string().contains("has no usable RSA key"), "{err}");
}
