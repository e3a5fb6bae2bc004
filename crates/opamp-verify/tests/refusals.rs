//! One test per refusal path of the trust policy, plus the acceptances next to them.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opamp_verify::{
    ContentHash, KeyRing, PackageToVerify, Provenance, PublicKey, Scheme, SignatureEnvelope,
    TrustPolicy, TrustedKey, VerificationContext, VerifyError,
};

const MAX: u64 = 1 << 30;

fn context() -> VerificationContext {
    VerificationContext::new(now())
}

fn verify(
    policy: &TrustPolicy,
    name: &str,
    version: &str,
    signature: &[u8],
    context: &VerificationContext,
) -> Result<opamp_verify::Verified<opamp_verify::VerifiedPackage>, VerifyError> {
    let file = file();
    let hash = ContentHash::of(&file);
    let offer = PackageToVerify::new(name, version, hash.as_bytes(), signature);
    policy.verify_package(&offer, context, &file[..], MAX)
}

#[test]
fn accepts_each_scheme() {
    for signer in [
        ed25519_signer(1),
        rsa_signer('a', Scheme::RsaPssSha256),
        rsa_signer('a', Scheme::RsaPkcs1v15Sha256),
    ] {
        let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
        let policy = policy_trusting(&[&signer]);
        let verified = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &context()).unwrap();
        assert_eq!(verified.name(), "otelcol-contrib");
        assert_eq!(verified.version(), "1.2.0");
        assert_eq!(verified.size(), file().len() as u64);
        assert_eq!(verified.key_id(), Some(signer.key_id()));
        assert_eq!(
            verified.provenance(),
            &Provenance::Statement {
                key_id: signer.key_id(),
                scheme: signer.scheme()
            }
        );
        assert!(!verified.downgrade_authorised());
    }
}

#[test]
fn unknown_key() {
    let signer = ed25519_signer(1);
    let stranger = ed25519_signer(2);
    let signature = stranger.sign_statement(&statement("1.2.0")).unwrap();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UnknownKey { key_id } if key_id == stranger.key_id()));
    assert!(err.to_string().contains(&stranger.key_id().to_string()));
}

#[test]
fn revoked_key() {
    let signer = ed25519_signer(1);
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(signer.public_key().clone()));
    keys.revoke(signer.key_id());
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let err = verify(
        &TrustPolicy::new(keys),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::RevokedKey { key_id } if key_id == signer.key_id()));
}

#[test]
fn expired_key_and_rotation_to_a_new_key() {
    let old = ed25519_signer(1);
    let new = ed25519_signer(2);
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(old.public_key().clone()).with_not_after(at(NOW_SECS - DAY)));
    keys.trust(TrustedKey::new(new.public_key().clone()));
    let policy = TrustPolicy::new(keys);
    let err = verify(
        &policy,
        "otelcol-contrib",
        "1.2.0",
        &old.sign_statement(&statement("1.2.0")).unwrap(),
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::KeyExpired { not_after, now, .. } if not_after == NOW_SECS - DAY && now == NOW_SECS
    ));
    verify(
        &policy,
        "otelcol-contrib",
        "1.2.0",
        &new.sign_statement(&statement("1.2.0")).unwrap(),
        &context(),
    )
    .unwrap();
}

#[test]
fn expired_statement() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let policy = policy_trusting(&[&signer]);
    let late = VerificationContext::new(at(NOW_SECS + 31 * DAY));
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &late).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Expired { now, not_after } if now == NOW_SECS + 31 * DAY && not_after == NOW_SECS + 30 * DAY
    ));
    // The expiry second itself is still valid.
    let edge = VerificationContext::new(at(NOW_SECS + 30 * DAY));
    verify(&policy, "otelcol-contrib", "1.2.0", &signature, &edge).unwrap();
}

#[test]
fn tampered_name() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::NameMismatch { ref signed, ref offered }
        if signed == "otelcol-contrib" && offered == "otelcol")
    );
}

#[test]
fn tampered_version() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.3.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::VersionMismatch { ref signed, ref offered }
        if signed == "1.2.0" && offered == "1.3.0")
    );
}

#[test]
fn tampered_offer_hash() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let other = ContentHash::of(b"another file");
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", other.as_bytes(), &signature);
    let err = policy_trusting(&[&signer])
        .verify_offer(&offer, &context())
        .unwrap_err();
    assert!(matches!(err, VerifyError::OfferHashMismatch { offered, .. } if offered == other));
}

#[test]
fn content_hash_length_is_checked() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", &[0u8; 20], &signature);
    let err = policy_trusting(&[&signer])
        .verify_offer(&offer, &context())
        .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::InvalidContentHash { length: 20 }
    ));
}

#[test]
fn tampered_file_content() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let policy = policy_trusting(&[&signer]);
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &signature);
    let mut tampered = file();
    tampered[5000] ^= 1;
    let err = policy
        .verify_package(&offer, &context(), &tampered[..], MAX)
        .unwrap_err();
    assert!(matches!(err, VerifyError::HashMismatch { expected, actual }
        if expected == hash && actual == ContentHash::of(&tampered)));
}

#[test]
fn file_shorter_than_signed_size() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &signature);
    let short = &file()[..9_999];
    let err = policy_trusting(&[&signer])
        .verify_package(&offer, &context(), short, MAX)
        .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::SizeMismatch {
            signed: 10_000,
            actual: 9_999
        }
    ));
}

#[test]
fn file_longer_than_signed_size_is_cut_off() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &signature);
    let mut long = file();
    long.extend_from_slice(&[0; 100]);
    let err = policy_trusting(&[&signer])
        .verify_package(&offer, &context(), &long[..], MAX)
        .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::LargerThanSigned { signed: 10_000 }
    ));
    // The caller's own limit still applies when it is below the signed size.
    let err = policy_trusting(&[&signer])
        .verify_package(&offer, &context(), &file()[..], 100)
        .unwrap_err();
    assert!(matches!(err, VerifyError::TooLarge { limit: 100 }));
}

#[test]
fn rollback_without_authorisation() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let installed = context().with_highest_installed("1.3.0".parse().unwrap());
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &installed,
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::Rollback { ref highest_installed, ref offered }
        if highest_installed.to_string() == "1.3.0" && offered.to_string() == "1.2.0")
    );
    let text = err.to_string();
    assert!(text.contains("1.3.0") && text.contains("1.2.0"), "{text}");
}

#[test]
fn same_or_newer_version_is_not_a_rollback() {
    let signer = ed25519_signer(1);
    let policy = policy_trusting(&[&signer]);
    for version in ["1.2.0", "1.2.1", "2.0.0"] {
        let signature = signer.sign_statement(&statement(version)).unwrap();
        let installed = context().with_highest_installed("1.2.0".parse().unwrap());
        let verified = verify(&policy, "otelcol-contrib", version, &signature, &installed).unwrap();
        assert!(!verified.downgrade_authorised());
    }
}

#[test]
fn build_metadata_does_not_order_versions() {
    let signer = ed25519_signer(1);
    let policy = policy_trusting(&[&signer]);
    let signature = signer.sign_statement(&statement("1.2.0+build.1")).unwrap();
    let installed = context().with_highest_installed("1.2.0+build.9".parse().unwrap());
    verify(
        &policy,
        "otelcol-contrib",
        "1.2.0+build.1",
        &signature,
        &installed,
    )
    .unwrap();
    // A pre-release is lower than its release.
    let signature = signer.sign_statement(&statement("1.2.0-rc.1")).unwrap();
    let installed = context().with_highest_installed("1.2.0".parse().unwrap());
    let err = verify(
        &policy,
        "otelcol-contrib",
        "1.2.0-rc.1",
        &signature,
        &installed,
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Rollback { .. }));
}

#[test]
fn authorised_downgrade_is_accepted() {
    let signer = rsa_signer('a', Scheme::RsaPssSha256);
    let signature = signer
        .sign_statement(&statement("1.2.0").with_downgrade(downgrade_from("1.3.0")))
        .unwrap();
    let installed = context().with_highest_installed("1.3.0".parse().unwrap());
    let verified = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &installed,
    )
    .unwrap();
    assert!(verified.downgrade_authorised());
}

#[test]
fn downgrade_from_a_later_release_is_not_authorised() {
    let signer = ed25519_signer(1);
    let signature = signer
        .sign_statement(&statement("1.2.0").with_downgrade(downgrade_from("1.3.0")))
        .unwrap();
    let installed = context().with_highest_installed("1.4.0".parse().unwrap());
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &installed,
    )
    .unwrap_err();
    assert!(
        matches!(err, VerifyError::DowngradeNotAuthorised { ref authorised_from, .. }
        if authorised_from.to_string() == "1.3.0")
    );
}

#[test]
fn missing_signature() {
    let signer = ed25519_signer(1);
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &[],
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::MissingSignature { .. }));
}

#[test]
fn unsigned_is_accepted_only_when_not_required_and_still_hash_checked() {
    let policy = TrustPolicy::new(KeyRing::new()).dangerous_accept_unsigned(true);
    let verified = verify(&policy, "otelcol-contrib", "1.2.0", &[], &context()).unwrap();
    assert_eq!(verified.provenance(), &Provenance::Unsigned);
    let hash = ContentHash::of(b"something else");
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &[]);
    let err = policy
        .verify_package(&offer, &context(), &file()[..], MAX)
        .unwrap_err();
    assert!(matches!(err, VerifyError::HashMismatch { .. }));
    let installed = context().with_highest_installed("1.3.0".parse().unwrap());
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &[], &installed).unwrap_err();
    assert!(matches!(err, VerifyError::Rollback { .. }));
}

#[test]
fn a_bad_signature_is_refused_even_when_signatures_are_optional() {
    let signer = ed25519_signer(1);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 1;
    let policy = policy_trusting(&[&signer]).dangerous_accept_unsigned(true);
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &context()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { .. }));
}

#[test]
fn compatible_mode_disabled_by_default() {
    let signer = rsa_signer('a', Scheme::RsaPkcs1v15Sha256);
    let signature = signer.sign_compatible(&ContentHash::of(&file())).unwrap();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::CompatibleModeDisabled { .. }));
}

#[test]
fn compatible_mode_accepts_trusted_key_and_refuses_others() {
    let a = rsa_signer('a', Scheme::RsaPkcs1v15Sha256);
    let b = rsa_signer('b', Scheme::RsaPkcs1v15Sha256);
    let ed = ed25519_signer(1);
    let policy = policy_trusting(&[&ed, &a]).allow_compatible_mode(true);
    let signature = a.sign_compatible(&ContentHash::of(&file())).unwrap();
    let verified = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &context()).unwrap();
    assert_eq!(
        verified.provenance(),
        &Provenance::Compatible { key_id: a.key_id() }
    );

    let by_b = b.sign_compatible(&ContentHash::of(&file())).unwrap();
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &by_b, &context()).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::NoTrustedKeyVerifies { tried: 1 }
    ));

    // Compatible mode does not sign the version, so anti-rollback applies to the offered label
    // and no downgrade can be authorised.
    let installed = context().with_highest_installed("1.3.0".parse().unwrap());
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &installed).unwrap_err();
    assert!(matches!(err, VerifyError::Rollback { .. }));
}

#[test]
fn compatible_mode_names_a_revoked_signer() {
    let a = rsa_signer('a', Scheme::RsaPkcs1v15Sha256);
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(a.public_key().clone()));
    keys.revoke(a.key_id());
    let policy = TrustPolicy::new(keys).allow_compatible_mode(true);
    let signature = a.sign_compatible(&ContentHash::of(&file())).unwrap();
    let err = verify(&policy, "otelcol-contrib", "1.2.0", &signature, &context()).unwrap_err();
    assert!(matches!(err, VerifyError::RevokedKey { key_id } if key_id == a.key_id()));
}

#[test]
fn truncated_envelope() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let policy = policy_trusting(&[&signer]);
    for cut in [9, 40, 60, signature.len() - 1] {
        let err = verify(
            &policy,
            "otelcol-contrib",
            "1.2.0",
            &signature[..cut],
            &context(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Truncated { .. } | VerifyError::Malformed { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
    let err = verify(
        &policy,
        "otelcol-contrib",
        "1.2.0",
        &signature[..signature.len() - 1],
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Truncated {
            field: "signature",
            needed: 64,
            available: 63
        }
    ));
}

#[test]
fn trailing_bytes_after_envelope() {
    let signer = ed25519_signer(1);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    signature.push(0);
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Malformed {
            field: "envelope",
            ..
        }
    ));
}

#[test]
fn unknown_scheme_code() {
    let signer = ed25519_signer(1);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    signature[9] = 9;
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::UnsupportedScheme { code: 9 }));
}

#[test]
fn unknown_envelope_version() {
    let signer = ed25519_signer(1);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    signature[8] = 2;
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::UnsupportedEnvelopeVersion {
            version: 2,
            supported: 1
        }
    ));
}

#[test]
fn wrong_scheme_for_the_key() {
    let signer = rsa_signer('a', Scheme::RsaPssSha256);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    signature[9] = Scheme::Ed25519.code();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::SchemeKeyMismatch {
            scheme: Scheme::Ed25519,
            key_type: "RSA",
            ..
        }
    ));
}

#[test]
fn scheme_swap_between_rsa_paddings_breaks_the_signature() {
    let signer = rsa_signer('a', Scheme::RsaPssSha256);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    signature[9] = Scheme::RsaPkcs1v15Sha256.code();
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::BadSignature {
            scheme: Scheme::RsaPkcs1v15Sha256,
            ..
        }
    ));
}

#[test]
fn bad_signature() {
    let signer = ed25519_signer(1);
    let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 0x80;
    let err = verify(
        &policy_trusting(&[&signer]),
        "otelcol-contrib",
        "1.2.0",
        &signature,
        &context(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature { key_id, .. } if key_id == signer.key_id()));
}

#[test]
fn offered_version_must_be_semver() {
    let policy = TrustPolicy::new(KeyRing::new()).dangerous_accept_unsigned(true);
    let err = verify(&policy, "otelcol-contrib", "latest", &[], &context()).unwrap_err();
    assert!(matches!(err, VerifyError::InvalidVersion { ref version, .. } if version == "latest"));
}

#[test]
fn weak_rsa_key_is_refused() {
    let pem = std::fs::read_to_string(fixture("weak-rsa-1024.pub.pem")).unwrap();
    let err = PublicKey::from_spki_pem(&pem).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::WeakKey {
            bits: 1024,
            minimum: 2048
        }
    ));
}

#[test]
fn envelope_fields_are_readable_before_trusting_them() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let envelope = SignatureEnvelope::parse(&signature).unwrap();
    assert_eq!(envelope.scheme(), Scheme::Ed25519);
    assert_eq!(envelope.key_id(), signer.key_id());
    assert_eq!(envelope.statement(), &statement("1.2.0"));
    assert_eq!(envelope.signature().len(), 64);
}
