//! Shared fixtures for the integration tests.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opamp_verify::{
    ContentHash, DowngradeAuthorisation, KeyRing, ReleaseSigner, Scheme, Statement, TrustPolicy,
    TrustedKey,
};

/// The agent's clock in the tests: 2030-01-01T00:00:00Z.
pub const NOW_SECS: u64 = 1_893_456_000;
pub const DAY: u64 = 86_400;

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn now() -> SystemTime {
    at(NOW_SECS)
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn rsa_signer(which: char, scheme: Scheme) -> ReleaseSigner {
    let pem = std::fs::read_to_string(fixture(&format!("release-rsa-{which}.key.pem"))).unwrap();
    ReleaseSigner::from_pkcs8_pem(&pem, Some(scheme)).unwrap()
}

pub fn ed25519_signer(seed: u64) -> ReleaseSigner {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    ReleaseSigner::ed25519_from_secret(&secret).unwrap()
}

/// The package file every test offers.
pub fn file() -> Vec<u8> {
    (0..10_000u32).map(|i| (i % 251) as u8).collect()
}

pub fn statement(version: &str) -> Statement {
    let file = file();
    Statement::new(
        "otelcol-contrib",
        version,
        ContentHash::of(&file),
        file.len() as u64,
        at(NOW_SECS + 30 * DAY),
    )
    .unwrap()
}

pub fn downgrade_from(version: &str) -> DowngradeAuthorisation {
    DowngradeAuthorisation::AllowFromAtMost(version.parse().unwrap())
}

pub fn policy_trusting(signers: &[&ReleaseSigner]) -> TrustPolicy {
    let mut keys = KeyRing::new();
    for signer in signers {
        keys.trust(TrustedKey::new(signer.public_key().clone()));
    }
    TrustPolicy::new(keys)
}

/// Finds `openssl` on PATH, or prints why a test is skipped.
pub fn openssl() -> Option<PathBuf> {
    let found = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        Some(PathBuf::from("openssl"))
    } else {
        eprintln!("SKIPPED: `openssl` is not on PATH; the independent test vector cannot be made");
        None
    }
}
