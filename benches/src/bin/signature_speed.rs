//! Signature verifications per second of one thread's CPU time, per scheme, in the units
//! `openssl speed` prints (it divides by CPU user time too).
//!
//! Two levels: `primitive` is `opamp_verify::PublicKey::verify` over a 36-byte message (what
//! `openssl speed` times: one public-key operation on a short input), `offer` is
//! `TrustPolicy::verify_offer` on a signed release statement (what an agent pays per offer:
//! envelope parsing, statement encoding, key lookup and the public-key operation).
//!
//! ```text
//! cargo run --release -p opamp-benches --bin signature_speed -- [SECONDS per measure, default 3]
//! ```
//! Output lines: `<level> <scheme> <verifies per CPU second>`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use opamp_benches::cpu_time::thread_cpu_now;
use opamp_verify::{
    ContentHash, KeyRing, PackageToVerify, ReleaseSigner, Scheme, Statement, TrustPolicy,
    TrustedKey, VerificationContext,
};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};

const RSA_KEY: &str =
    include_str!("../../../crates/opamp-verify/tests/fixtures/release-rsa-a.key.pem");
const ED25519_KEY: &str =
    include_str!("../../../crates/opamp-verify/tests/fixtures/release-ed25519.key.pem");

/// Calls `verify` until `budget` of this thread's CPU time is spent; returns calls per second.
fn rate(budget: Duration, mut verify: impl FnMut() -> bool) -> f64 {
    let start = thread_cpu_now();
    let mut count = 0u64;
    loop {
        assert!(black_box(verify()), "a valid signature must verify");
        count += 1;
        let spent = thread_cpu_now().saturating_sub(start);
        if spent >= budget {
            return count as f64 / spent.as_secs_f64();
        }
    }
}

/// A raw signature (no envelope) over `message` with the fixture key for `scheme`.
fn raw_signature(scheme: Scheme, message: &[u8]) -> Vec<u8> {
    match scheme {
        Scheme::Ed25519 => {
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(ED25519_KEY).unwrap();
            key.sign(message).to_bytes().to_vec()
        }
        Scheme::RsaPssSha256 => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_KEY).unwrap();
            rsa::pss::SigningKey::<rsa::sha2::Sha256>::new(key)
                .sign_with_rng(&mut rand::thread_rng(), message)
                .to_vec()
        }
        Scheme::RsaPkcs1v15Sha256 => {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_KEY).unwrap();
            rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key)
                .sign(message)
                .to_vec()
        }
        other => panic!("scheme {other} not measured"),
    }
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS is a whole number"))
        .unwrap_or(3);
    let budget = Duration::from_secs(seconds);
    let statement = Statement::new(
        "otelcol-contrib",
        "0.110.0",
        ContentHash::of(b"collector"),
        9,
        UNIX_EPOCH + Duration::from_secs(4_000_000_000),
    )
    .unwrap();
    let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000));
    let message = [0x5au8; 36];

    for (pem, scheme) in [
        (ED25519_KEY, Scheme::Ed25519),
        (RSA_KEY, Scheme::RsaPssSha256),
        (RSA_KEY, Scheme::RsaPkcs1v15Sha256),
    ] {
        let signer = ReleaseSigner::from_pkcs8_pem(pem, Some(scheme)).unwrap();
        let public = signer.public_key().clone();
        let signature = raw_signature(scheme, &message);
        let per_second = rate(budget, || {
            public
                .verify(scheme, black_box(&message), black_box(&signature))
                .is_ok()
        });
        println!("primitive {scheme} {per_second:.0}");

        let hash = statement.content_hash();
        let envelope = signer.sign_statement(&statement).unwrap();
        let mut keys = KeyRing::new();
        keys.trust(TrustedKey::new(public));
        let policy = TrustPolicy::new(keys);
        let per_second = rate(budget, || {
            let offer =
                PackageToVerify::new("otelcol-contrib", "0.110.0", hash.as_bytes(), &envelope);
            policy.verify_offer(black_box(&offer), &context).is_ok()
        });
        println!("offer {scheme} {per_second:.0}");
    }
}
