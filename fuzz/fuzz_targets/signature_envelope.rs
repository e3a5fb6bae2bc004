//! Signature envelope parser and trust policy on arbitrary bytes.
//!
//! - `SignatureEnvelope::parse` never panics, and whatever it accepts re-encodes to the same
//!   bytes (its statement too).
//! - The trust policy never approves: the only trusted keys are fixed test keys whose private
//!   halves the fuzzer does not have, and the committed seeds carry no signature made by them,
//!   so every offer must be refused. An approval would mean a forged signature got through.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use opamp_verify::{
    KeyRing, PackageToVerify, ReleaseSigner, SignatureEnvelope, Statement, TrustPolicy, TrustedKey,
    VerificationContext,
};

/// Trusts the Ed25519 test key (envelopes) and RSA test key `a` (compatible mode).
static POLICY: LazyLock<TrustPolicy> = LazyLock::new(|| {
    let mut keys = KeyRing::new();
    for (pem, scheme) in [
        (
            include_str!("../../crates/opamp-verify/tests/fixtures/release-ed25519.key.pem"),
            None,
        ),
        (
            include_str!("../../crates/opamp-verify/tests/fixtures/release-rsa-a.key.pem"),
            Some(opamp_verify::Scheme::RsaPkcs1v15Sha256),
        ),
    ] {
        let signer = ReleaseSigner::from_pkcs8_pem(pem, scheme).expect("test key parses");
        keys.trust(TrustedKey::new(signer.public_key().clone()));
    }
    TrustPolicy::new(keys).allow_compatible_mode(true)
});

/// 2030-01-01: before the expiry of the seed statements, so expiry is not what refuses them.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fuzz_target!(|data: &[u8]| {
    let parsed = SignatureEnvelope::parse(data);
    if let Ok(envelope) = &parsed {
        assert_eq!(
            envelope.to_bytes(),
            data,
            "accepted envelope re-encodes differently"
        );
        let statement = envelope.statement();
        let again = Statement::from_bytes(&statement.to_bytes()).expect("own statement parses");
        assert_eq!(&again, statement);
    }

    // Mirror the statement in the offer, so the policy gets as far as the signature check.
    let (name, version, hash) = match &parsed {
        Ok(envelope) => {
            let statement = envelope.statement();
            (
                statement.name().to_owned(),
                statement.version().to_owned(),
                statement.content_hash().as_bytes().to_vec(),
            )
        }
        Err(_) => ("otelcol".to_owned(), "1.0.0".to_owned(), vec![0x5a; 32]),
    };
    let offer = PackageToVerify::new(&name, &version, &hash, data);
    let context = VerificationContext::new(now());
    if let Ok(approved) = POLICY.verify_offer(&offer, &context) {
        panic!("forged offer approved: {approved:?}");
    }
    let context = context.with_highest_installed(semver::Version::new(1, 0, 0));
    assert!(
        POLICY.verify_offer(&offer, &context).is_err(),
        "forged offer approved"
    );
});
