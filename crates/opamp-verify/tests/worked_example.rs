//! The worked example in README.md is real: these bytes come from the crate and verify.

// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, UNIX_EPOCH};

use opamp_verify::{
    ContentHash, DowngradeAuthorisation, KeyRing, PackageToVerify, ReleaseSigner, Statement,
    TrustPolicy, TrustedKey, VerificationContext,
};

/// An Ed25519 key whose 32 private bytes are 0x01..=0x20 (documented in the README).
fn example_signer() -> ReleaseSigner {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
    let pem = ed25519_dalek::SigningKey::from_bytes(&seed)
        .to_pkcs8_pem(Default::default())
        .unwrap();
    ReleaseSigner::from_pkcs8_pem(&pem, None).unwrap()
}

fn example_envelope() -> Vec<u8> {
    let statement = Statement::new(
        "otelcol",
        "1.4.2",
        ContentHash::of(b"hello"),
        5,
        UNIX_EPOCH + Duration::from_secs(1_900_000_000),
    )
    .unwrap()
    .with_downgrade(DowngradeAuthorisation::AllowFromAtMost(
        "1.5.0".parse().unwrap(),
    ));
    example_signer().sign_statement(&statement).unwrap()
}

/// The hex between the `example-envelope` markers in README.md.
fn readme_hex() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- example-envelope:start -->").unwrap();
    let end = readme.find("<!-- example-envelope:end -->").unwrap();
    readme[start..end]
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with("```"))
        .flat_map(|line| line.split('#').next())
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn readme_worked_example_matches_the_crate() {
    let envelope = example_envelope();
    let documented = readme_hex();
    assert_eq!(
        hex::encode(&envelope),
        documented,
        "update README.md; the envelope is now:\n{}",
        hex::encode(&envelope)
    );
}

#[test]
fn readme_worked_example_verifies() {
    let signer = example_signer();
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(signer.public_key().clone()));
    let envelope = hex::decode(readme_hex()).unwrap();
    let hash = ContentHash::of(b"hello");
    let offer = PackageToVerify::new("otelcol", "1.4.2", hash.as_bytes(), &envelope);
    let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .with_highest_installed("1.5.0".parse().unwrap());
    let verified = TrustPolicy::new(keys)
        .verify_package(&offer, &context, &b"hello"[..], 1024)
        .unwrap();
    assert!(verified.downgrade_authorised());
}
