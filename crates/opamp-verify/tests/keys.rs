//! Key handling: PEM in and out, key ids, refusals of unusable keys.

// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;
use opamp_verify::{ContentHash, KeyId, PublicKey, ReleaseSigner, Scheme, VerifyError};

#[test]
fn ed25519_private_and_public_pem_round_trip() {
    let signer = ed25519_signer(11);
    let reloaded = ReleaseSigner::from_pkcs8_pem(&signer.to_pkcs8_pem().unwrap(), None).unwrap();
    assert_eq!(reloaded.key_id(), signer.key_id());
    assert_eq!(reloaded.scheme(), Scheme::Ed25519);
    let public = PublicKey::from_spki_pem(&signer.public_key().to_spki_pem().unwrap()).unwrap();
    assert_eq!(&public, signer.public_key());
    assert_eq!(public.key_type(), "Ed25519");
    assert_eq!(
        KeyId::of_spki_der(&public.to_spki_der().unwrap()),
        public.id()
    );
}

#[test]
fn rsa_private_pem_round_trips_and_defaults_to_pss() {
    let signer = rsa_signer('a', Scheme::RsaPkcs1v15Sha256);
    let reloaded = ReleaseSigner::from_pkcs8_pem(&signer.to_pkcs8_pem().unwrap(), None).unwrap();
    assert_eq!(reloaded.key_id(), signer.key_id());
    assert_eq!(reloaded.scheme(), Scheme::RsaPssSha256);
    assert_eq!(reloaded.public_key().key_type(), "RSA");
    assert!(reloaded.public_key().supports(Scheme::RsaPkcs1v15Sha256));
    assert!(!reloaded.public_key().supports(Scheme::Ed25519));
}

#[test]
fn rsa_key_generation_produces_a_working_signer() {
    // Runs the real prime search: a few seconds in an unoptimised build.
    let signer = ReleaseSigner::generate_rsa(2048, Scheme::RsaPssSha256).unwrap();
    let envelope = signer.sign_statement(&statement("1.0.0")).unwrap();
    let policy = policy_trusting(&[&signer]);
    let hash = ContentHash::of(&file());
    let offer =
        opamp_verify::PackageToVerify::new("otelcol-contrib", "1.0.0", hash.as_bytes(), &envelope);
    policy
        .verify_offer(&offer, &opamp_verify::VerificationContext::new(now()))
        .unwrap();
}

#[test]
fn weak_rsa_generation_is_refused_before_any_work() {
    let err = ReleaseSigner::generate_rsa(1024, Scheme::RsaPssSha256).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::WeakKey {
            bits: 1024,
            minimum: 2048
        }
    ));
}

#[test]
fn scheme_must_fit_the_key() {
    let ed_pem = ed25519_signer(1).to_pkcs8_pem().unwrap();
    let err = ReleaseSigner::from_pkcs8_pem(&ed_pem, Some(Scheme::RsaPssSha256)).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::SchemeKeyMismatch {
            key_type: "Ed25519",
            ..
        }
    ));

    let rsa_pem = rsa_signer('a', Scheme::RsaPssSha256)
        .to_pkcs8_pem()
        .unwrap();
    let err = ReleaseSigner::from_pkcs8_pem(&rsa_pem, Some(Scheme::Ed25519)).unwrap_err();
    assert!(matches!(
        err,
        VerifyError::SchemeKeyMismatch {
            key_type: "RSA",
            ..
        }
    ));

    // Compatible mode is RSA only.
    let err = ed25519_signer(1)
        .sign_compatible(&ContentHash::of(b"x"))
        .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::SchemeKeyMismatch {
            scheme: Scheme::RsaPkcs1v15Sha256,
            ..
        }
    ));
}

#[test]
fn pem_labels_and_garbage_are_refused() {
    let signer = ed25519_signer(1);
    let public = signer.public_key().to_spki_pem().unwrap();
    let private = signer.to_pkcs8_pem().unwrap();
    assert!(matches!(
        PublicKey::from_spki_pem(&private),
        Err(VerifyError::InvalidKey { .. })
    ));
    assert!(matches!(
        ReleaseSigner::from_pkcs8_pem(&public, None),
        Err(VerifyError::InvalidKey { .. })
    ));
    assert!(matches!(
        PublicKey::from_spki_pem("not a key"),
        Err(VerifyError::InvalidKey { .. })
    ));
    assert!(matches!(
        PublicKey::from_spki_der(&[0x30, 0x03, 0x02, 0x01]),
        Err(VerifyError::InvalidKey { .. })
    ));
}

#[test]
fn other_key_algorithms_are_refused_by_name() {
    let Some(openssl) = openssl() else { return };
    let output = Command::new(openssl)
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let private = String::from_utf8(output.stdout).unwrap();
    let err = ReleaseSigner::from_pkcs8_pem(&private, None).unwrap_err();
    assert!(
        matches!(err, VerifyError::UnsupportedKeyAlgorithm { ref oid } if oid == "1.2.840.10045.2.1")
    );
}

#[test]
fn key_ids_and_scheme_names_parse_from_text() {
    let id = ed25519_signer(1).key_id();
    assert_eq!(id.to_string().parse::<KeyId>().unwrap(), id);
    assert!(matches!(
        "abc".parse::<KeyId>(),
        Err(VerifyError::InvalidHex { what: "key id", .. })
    ));
    for scheme in [
        Scheme::Ed25519,
        Scheme::RsaPssSha256,
        Scheme::RsaPkcs1v15Sha256,
    ] {
        assert_eq!(scheme.name().parse::<Scheme>().unwrap(), scheme);
        assert_eq!(Scheme::from_code(scheme.code()).unwrap(), scheme);
    }
    assert!(matches!(
        "rsa".parse::<Scheme>(),
        Err(VerifyError::UnknownSchemeName { .. })
    ));
}
