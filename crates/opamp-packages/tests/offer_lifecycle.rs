//! A whole package lifecycle through the real OpAMP wire encoding: the server offers, the agent
//! plans against what it has, reports typed statuses, and the server parses them back. Every
//! message crosses `opamp_proto::codec` as a WebSocket frame, as it would on a connection.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions: a panic fails the test.

use opamp_packages::{
    AgentHas, ContentHash, DownloadProgress, InstalledPackage, InstalledPackages, OfferedPackage,
    PackageAction, PackageKey, PackageName, PackageOffer, PackageState, PackageStatusesBuilder,
    ServerOffered, all_packages_hash, parse_package_statuses, plan_sync,
};
use opamp_proto::{Limits, codec, v1};

fn name(text: &str) -> PackageName {
    PackageName::new(text).unwrap()
}

fn collector(version: &str) -> OfferedPackage {
    OfferedPackage::top_level(
        name("otelcol"),
        version,
        format!("https://downloads.example/otelcol_{version}.tar.gz"),
        ContentHash::of(version.as_bytes()),
    )
    .with_signature(format!("signature over {version}").into_bytes())
}

fn geoip() -> OfferedPackage {
    OfferedPackage::addon(
        name("geoip"),
        "2024.10.1",
        "https://downloads.example/geoip.mmdb",
        ContentHash::of(b"geoip database"),
    )
    .with_header("Authorization", "Bearer download-token")
}

/// Server -> agent over a WebSocket frame.
fn send_offer(offer: &PackageOffer) -> v1::PackagesAvailable {
    let message = v1::ServerToAgent {
        packages_available: Some(offer.build()),
        ..Default::default()
    };
    let frame = codec::encode_ws_frame(&message);
    let received: v1::ServerToAgent = codec::decode_ws_frame(&frame, &Limits::default()).unwrap();
    received.packages_available.unwrap()
}

/// Agent -> server over a WebSocket frame.
fn send_statuses(statuses: v1::PackageStatuses) -> v1::PackageStatuses {
    let message = v1::AgentToServer {
        sequence_num: 1,
        package_statuses: Some(statuses),
        ..Default::default()
    };
    let frame = codec::encode_ws_frame(&message);
    let received: v1::AgentToServer = codec::decode_ws_frame(&frame, &Limits::default()).unwrap();
    received.package_statuses.unwrap()
}

/// What a supervisor does after a successful install: remember version and hashes.
fn apply(plan: &opamp_packages::SyncPlan, installed: &mut InstalledPackages) {
    for planned in plan.packages() {
        match planned.action.target() {
            Some(target) => {
                installed.insert(
                    planned.key.clone(),
                    InstalledPackage::new(
                        target.version.clone(),
                        target.package_hash.clone(),
                        target.content_hash,
                    ),
                );
            }
            None => {
                installed.remove(&planned.key);
            }
        }
    }
    installed.set_last_applied_all_packages_hash(plan.offered_all_packages_hash().to_vec());
}

#[test]
fn install_report_upgrade_remove_and_downgrade() {
    let mut installed = InstalledPackages::new();

    // 1. First offer: everything is new.
    let offer = PackageOffer::new()
        .with_package(collector("0.109.0"))
        .unwrap()
        .with_package(geoip())
        .unwrap();
    let received = send_offer(&offer);
    // The hashes survive the wire and can be recomputed by anyone.
    assert_eq!(
        received.all_packages_hash,
        all_packages_hash(&received).to_vec()
    );
    let plan = plan_sync(&received, &installed);
    assert!(plan.rejected().is_empty());
    assert_eq!(plan.packages().len(), 2);
    assert!(
        plan.packages()
            .iter()
            .all(|p| matches!(p.action, PackageAction::Install { .. }))
    );
    let geoip_target = plan.packages()[0].action.target().unwrap();
    assert_eq!(
        geoip_target.headers,
        vec![(
            "Authorization".to_owned(),
            "Bearer download-token".to_owned()
        )]
    );

    // 2. The agent reports progress; the server reads it back in typed form.
    let otelcol_key = PackageKey::from(name("otelcol"));
    let otelcol_target = plan.packages()[1].action.target().unwrap();
    let downloading = PackageState::Downloading {
        has: None,
        offered: ServerOffered::new(
            otelcol_target.version.clone(),
            otelcol_target.package_hash.clone(),
        )
        .unwrap(),
        progress: Some(DownloadProgress::new(50.0, 4_000_000.0).unwrap()),
    };
    let report = PackageStatusesBuilder::new(plan.offered_all_packages_hash().to_vec())
        .package(otelcol_key.clone(), downloading.clone())
        .build();
    let parsed = parse_package_statuses(&send_statuses(report)).unwrap();
    assert_eq!(parsed.packages[&otelcol_key], downloading);
    assert_eq!(
        parsed.server_provided_all_packages_hash,
        received.all_packages_hash
    );

    // 3. Installed: the same offer again is recognised without looking at packages.
    apply(&plan, &mut installed);
    let installed_state = PackageState::Installed {
        has: AgentHas::new(
            "0.109.0",
            installed.get(&otelcol_key).unwrap().package_hash().to_vec(),
        )
        .unwrap(),
        offered: Some(ServerOffered::new("0.109.0", otelcol_target.package_hash.clone()).unwrap()),
    };
    let parsed = parse_package_statuses(&send_statuses(
        PackageStatusesBuilder::new(received.all_packages_hash.clone())
            .package(otelcol_key.clone(), installed_state.clone())
            .build(),
    ))
    .unwrap();
    assert_eq!(parsed.packages[&otelcol_key], installed_state);
    assert!(plan_sync(&send_offer(&offer), &installed).is_already_applied());

    // 4. Upgrade the collector and drop the addon.
    let upgrade = PackageOffer::new()
        .with_package(collector("0.110.0"))
        .unwrap();
    let plan = plan_sync(&send_offer(&upgrade), &installed);
    assert!(!plan.is_already_applied());
    let actions: Vec<_> = plan
        .packages()
        .iter()
        .map(|p| (&p.key, &p.action))
        .collect();
    assert!(
        matches!(actions[0], (key, PackageAction::Remove { installed_version })
        if *key == PackageKey::from(name("geoip")) && installed_version == "2024.10.1")
    );
    assert!(
        matches!(actions[1], (_, PackageAction::Upgrade { from, target })
        if from == "0.109.0" && target.version == "0.110.0")
    );
    apply(&plan, &mut installed);

    // 5. Roll back: a downgrade, which only signed policy may allow.
    let rollback = PackageOffer::new()
        .with_package(collector("0.109.0"))
        .unwrap();
    let plan = plan_sync(&send_offer(&rollback), &installed);
    assert!(
        matches!(&plan.packages()[0].action, PackageAction::Downgrade { from, target }
        if from == "0.110.0" && target.version == "0.109.0")
    );
}

#[test]
fn offer_hashes_are_stable_across_builds_and_match_the_pinned_value() {
    // The same offer, built twice (HashMap iteration order is randomised per map instance),
    // may list its packages in a different order, but always carries the same hashes.
    let build = || {
        PackageOffer::new()
            .with_package(collector("1.0.0"))
            .unwrap()
            .with_package(geoip())
            .unwrap()
            .build()
    };
    let (a, b) = (build(), build());
    assert_eq!(a.all_packages_hash, b.all_packages_hash);
    // Pinned value (also reproduced with the Python reference in docs/hashes.md): guards
    // against accidental layout changes (which would make every agent
    // re-download everything). Bump the tag in `hash.rs` if the layout must change.
    assert_eq!(
        hex::encode(&a.all_packages_hash),
        PINNED_ALL_PACKAGES_HASH,
        "all_packages_hash layout changed"
    );
}

const PINNED_ALL_PACKAGES_HASH: &str =
    "e177dbc1c2e54ab33964be0bcf2752dc59543c10cabc68f0f76bb9f376a09c1e";
