//! An embedder-supplied signature format goes through the same policy checks.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::SystemTime;

use common::*;
use opamp_verify::{
    ContentHash, KeyRing, PackageOffer, PackageVerifier, Provenance, SignedClaims, TrustPolicy,
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
        offer: &PackageOffer<'_>,
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
    let offer = PackageOffer::new(
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
    let offer = PackageOffer::new(
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
    let offer = PackageOffer::new(
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
fn unrecognised_signatures_fall_to_compatible_mode() {
    let hash = ContentHash::of(&file());
    let offer = PackageOffer::new("otelcol-contrib", "1.2.0", hash.as_bytes(), b"OTHER");
    let err = policy()
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap_err();
    assert!(matches!(err, VerifyError::CompatibleModeDisabled { .. }));
}
