//! Cost of checking one package offer's signature per scheme (what an agent pays per offer),
//! and of signing on the release side.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_main};
use opamp_verify::{
    ContentHash, KeyRing, PackageToVerify, ReleaseSigner, Scheme, Statement, TrustPolicy,
    TrustedKey, VerificationContext,
};

const RSA_KEY: &str =
    include_str!("../../crates/opamp-verify/tests/fixtures/release-rsa-a.key.pem");
const ED25519_KEY: &str =
    include_str!("../../crates/opamp-verify/tests/fixtures/release-ed25519.key.pem");

fn signers() -> Vec<ReleaseSigner> {
    [
        (ED25519_KEY, Scheme::Ed25519),
        (RSA_KEY, Scheme::RsaPssSha256),
        (RSA_KEY, Scheme::RsaPkcs1v15Sha256),
    ]
    .into_iter()
    .map(|(pem, scheme)| ReleaseSigner::from_pkcs8_pem(pem, Some(scheme)).expect("fixture key"))
    .collect()
}

fn bench_signatures(c: &mut Criterion) {
    let hash = ContentHash::of(b"collector");
    let statement = Statement::new(
        "otelcol-contrib",
        "0.110.0",
        hash,
        9,
        UNIX_EPOCH + Duration::from_secs(4_000_000_000),
    )
    .expect("valid statement");
    let context = VerificationContext::new(UNIX_EPOCH + Duration::from_secs(1_900_000_000));

    let mut verify = c.benchmark_group("verify_offer");
    for signer in signers() {
        let signature = signer.sign_statement(&statement).expect("signs");
        let mut keys = KeyRing::new();
        keys.trust(TrustedKey::new(signer.public_key().clone()));
        let policy = TrustPolicy::new(keys);
        verify.bench_function(BenchmarkId::from_parameter(signer.scheme()), |b| {
            b.iter(|| {
                let offer =
                    PackageToVerify::new("otelcol-contrib", "0.110.0", hash.as_bytes(), &signature);
                policy.verify_offer(black_box(&offer), &context).is_ok()
            });
        });
    }
    verify.finish();

    let mut sign = c.benchmark_group("sign_statement");
    for signer in signers() {
        sign.bench_function(BenchmarkId::from_parameter(signer.scheme()), |b| {
            b.iter(|| signer.sign_statement(black_box(&statement)).is_ok());
        });
    }
    sign.finish();
}

/// Criterion's macros generate undocumented public functions; keep them in their own module.
mod harness {
    #![allow(missing_docs)]
    criterion::criterion_group! {
        name = benches;
        config = criterion::Criterion::default().sample_size(20);
        targets = super::bench_signatures
    }
}
criterion_main!(harness::benches);
