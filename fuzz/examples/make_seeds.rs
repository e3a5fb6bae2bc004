//! Writes the committed seeds of the structured fuzz targets into `fuzz/seeds/<target>/`.
//!
//! Run from `fuzz/`: `cargo +nightly run --example make_seeds`. Keys and signatures are
//! deterministic, so re-running changes nothing unless this file changes. No seed carries a
//! signature by a key the `signature_envelope` target trusts: that target asserts that every
//! offer is refused, which a genuine signature would (rightly) break.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use opamp_packages::{
    AgentHas, OfferedPackage, PackageKey, PackageName, PackageOffer, PackageState,
    PackageStatusesBuilder, ServerOffered,
};
use opamp_proto::codec;
use opamp_proto::v1;
use opamp_verify::{ContentHash, DowngradeAuthorisation, ReleaseSigner, Statement};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn signature_envelope() {
    // The key the target trusts, to copy its id; it signs nothing here.
    let trusted = ReleaseSigner::from_pkcs8_pem(
        include_str!("../../crates/opamp-verify/tests/fixtures/release-ed25519.key.pem"),
        None,
    )
    .unwrap();
    let stranger = ReleaseSigner::ed25519_from_secret(&[77; 32]).unwrap();
    let file = b"collector".to_vec();
    let statement = Statement::new(
        "otelcol-contrib",
        "0.110.0",
        ContentHash::of(&file),
        file.len() as u64,
        UNIX_EPOCH + Duration::from_secs(2_000_000_000),
    )
    .unwrap();
    let by_stranger = stranger.sign_statement(&statement).unwrap();
    write("signature_envelope", "unknown-key", &by_stranger);

    // Same envelope claiming the trusted key's id: reaches the signature check, which fails.
    let mut claimed = by_stranger.clone();
    claimed[10..42].copy_from_slice(trusted.key_id().as_bytes());
    write("signature_envelope", "claims-trusted-key", &claimed);

    let downgrade = statement
        .clone()
        .with_downgrade(DowngradeAuthorisation::AllowFromAtMost(
            "0.111.0".parse().unwrap(),
        ));
    let mut with_downgrade = stranger.sign_statement(&downgrade).unwrap();
    with_downgrade[10..42].copy_from_slice(trusted.key_id().as_bytes());
    write(
        "signature_envelope",
        "downgrade-claims-trusted-key",
        &with_downgrade,
    );

    // A bare 256-byte "compatible mode" signature (random, so it cannot verify).
    let mut bare = vec![0u8; 256];
    ChaCha20Rng::seed_from_u64(78).fill_bytes(&mut bare);
    write("signature_envelope", "compatible-mode", &bare);
}

/// `sync_planner` input: 2-byte length, protobuf offer, then agent state bytes.
fn planner_input(offer: &v1::PackagesAvailable, agent: &[u8]) -> Vec<u8> {
    let encoded = codec::encode(offer);
    let mut out = u16::try_from(encoded.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&encoded);
    out.extend_from_slice(agent);
    out
}

fn sync_planner() {
    let otelcol = PackageName::new("otelcol").unwrap();
    let offer = PackageOffer::new()
        .with_package(OfferedPackage::top_level(
            otelcol,
            "0.110.0",
            "https://127.0.0.1/otelcol.tar.gz",
            ContentHash::of(b"release"),
        ))
        .unwrap()
        .with_package(OfferedPackage::addon(
            PackageName::new("extra").unwrap(),
            "1.0.0",
            "https://127.0.0.1/extra",
            ContentHash::of(b"extra"),
        ))
        .unwrap()
        .build();
    write(
        "sync_planner",
        "two-packages-fresh-agent",
        &planner_input(&offer, &[]),
    );
    let mut agent = vec![0u8; 96];
    ChaCha20Rng::seed_from_u64(5).fill_bytes(&mut agent);
    write(
        "sync_planner",
        "two-packages-some-installed",
        &planner_input(&offer, &agent),
    );

    let mut hostile = offer.clone();
    for name in ["../x", "/etc/x", "a\\b", "a\0b", ""] {
        hostile
            .packages
            .insert(name.to_owned(), offer.packages["otelcol"].clone());
    }
    write(
        "sync_planner",
        "hostile-names",
        &planner_input(&hostile, &agent),
    );
}

fn package_statuses_parse() {
    let otelcol = PackageKey::Named(PackageName::new("otelcol").unwrap());
    let has = AgentHas::new("0.109.0", vec![1; 32]).unwrap();
    let offered = ServerOffered::new("0.110.0", vec![2; 32]).unwrap();
    let installed = PackageStatusesBuilder::new(vec![9; 32])
        .package(
            otelcol.clone(),
            PackageState::Installed {
                has: has.clone(),
                offered: None,
            },
        )
        .build();
    write(
        "package_statuses_parse",
        "installed",
        &codec::encode(&installed),
    );
    let failed = PackageStatusesBuilder::new(vec![9; 32])
        .package(
            otelcol.clone(),
            PackageState::InstallFailed {
                has: Some(has.clone()),
                offered: offered.clone(),
                error_message: "signature refused".into(),
            },
        )
        .package(
            PackageKey::Named(PackageName::new("extra").unwrap()),
            PackageState::Downloading {
                has: None,
                offered,
                progress: Some(opamp_packages::DownloadProgress::new(42.5, 1e6).unwrap()),
            },
        )
        .error_message("one package failed")
        .build();
    write(
        "package_statuses_parse",
        "failed-and-downloading",
        &codec::encode(&failed),
    );
}

fn sessions() {
    for (seed, len) in [(1u64, 64usize), (2, 512), (3, 4096)] {
        let mut bytes = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut bytes);
        write("agent_session", &format!("random-{len}"), &bytes);
        write("server_session", &format!("random-{len}"), &bytes);
    }
}

fn main() {
    signature_envelope();
    sync_planner();
    package_statuses_parse();
    sessions();
    println!("seeds written under fuzz/seeds/");
}
