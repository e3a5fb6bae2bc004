//! Invariants checked on generated inputs.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opamp_verify::{
    ContentHash, PackageToVerify, Scheme, SignatureEnvelope, Statement, VerificationContext,
};
use proptest::prelude::*;

fn check_refused(signer: &opamp_verify::ReleaseSigner, signature: &[u8], file: &[u8]) {
    let policy = policy_trusting(&[signer]);
    let hash = ContentHash::of(&common::file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), signature);
    let outcome = policy.verify_package(&offer, &VerificationContext::new(now()), file, 1 << 20);
    assert!(outcome.is_err(), "a flipped byte was accepted");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Flipping any bit of any byte of an Ed25519 envelope makes verification fail.
    #[test]
    fn any_flip_in_an_ed25519_envelope_is_refused(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let signer = ed25519_signer(3);
        let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
        let at = position.index(signature.len());
        signature[at] ^= 1 << bit;
        check_refused(&signer, &signature, &file());
    }

    /// Flipping any bit of the package file makes verification fail.
    #[test]
    fn any_flip_in_the_payload_is_refused(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let signer = ed25519_signer(3);
        let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
        let mut file = file();
        let at = position.index(file.len());
        file[at] ^= 1 << bit;
        check_refused(&signer, &signature, &file);
    }

    /// Envelope parsing never panics and accepts only canonical encodings.
    #[test]
    fn envelope_parsing_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(envelope) = SignatureEnvelope::parse(&bytes) {
            prop_assert_eq!(envelope.to_bytes(), bytes);
        }
    }

    /// Parsing never panics on inputs that start like an envelope either (so the fuzzer gets
    /// past the magic and the fixed header).
    #[test]
    fn envelope_parsing_never_panics_past_the_header(
        scheme in 0u8..5,
        tail in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = b"OPAMPSIG\x01".to_vec();
        bytes.push(scheme);
        bytes.extend_from_slice(&tail);
        if let Ok(envelope) = SignatureEnvelope::parse(&bytes) {
            prop_assert_eq!(envelope.to_bytes(), bytes);
        }
    }

    /// Statement parsing never panics; whatever parses re-encodes to the same bytes.
    #[test]
    fn statement_parsing_is_canonical(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(statement) = Statement::from_bytes(&bytes) {
            prop_assert_eq!(statement.to_bytes(), bytes);
        }
    }

    /// Any truncation of a valid envelope is refused.
    #[test]
    fn truncations_are_refused(cut in any::<prop::sample::Index>()) {
        let signer = ed25519_signer(3);
        let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
        let cut = cut.index(signature.len());
        prop_assert!(SignatureEnvelope::parse(&signature[..cut]).is_err());
    }

    /// Statements round-trip through the encoding for any field values.
    #[test]
    fn statements_round_trip(
        name in "[a-z][a-z0-9_.-]{0,40}",
        (major, minor, patch) in (0u64..1000, 0u64..1000, 0u64..1000),
        size in any::<u64>(),
        not_after in any::<u32>(),
        hash in any::<[u8; 32]>(),
        downgrade in proptest::option::of((0u64..100, 0u64..100)),
    ) {
        let mut statement = Statement::new(
            &name,
            &format!("{major}.{minor}.{patch}"),
            ContentHash::from_bytes(hash),
            size,
            at(u64::from(not_after)),
        ).unwrap();
        if let Some((a, b)) = downgrade {
            statement = statement.with_downgrade(downgrade_from(&format!("{a}.{b}.0")));
        }
        prop_assert_eq!(Statement::from_bytes(&statement.to_bytes()).unwrap(), statement);
    }
}

proptest! {
    // RSA verification is slow in an unoptimised build, so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_flip_in_an_rsa_envelope_is_refused(position in any::<prop::sample::Index>(), bit in 0u8..8) {
        let signer = rsa_signer('a', Scheme::RsaPssSha256);
        let mut signature = signer.sign_statement(&statement("1.2.0")).unwrap();
        let at = position.index(signature.len());
        signature[at] ^= 1 << bit;
        check_refused(&signer, &signature, &file());
    }
}
