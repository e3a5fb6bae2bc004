//! Attack fixtures: package names that try to leave the supervisor's storage directory.
//!
//! `tests/data/path-traversal/` holds a `PackagesAvailable` message (protobuf bytes, as a
//! hostile server would send it) offering packages named `../x`, `/etc/x`, `a\b`, `a<NUL>b`
//! and `..` next to one legitimate package, and one `PackageStatuses` message per hostile name
//! (as a hostile agent would report it to the server). Regenerate with:
//!
//! ```text
//! cargo test -p opamp-packages --test attacks -- --ignored
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use opamp_packages::{
    ContentHash, InstalledPackages, InvalidNameReason, PackageAction, PackageKey, PackageName,
    PackagesError, RejectionReason, StatusError, parse_package_statuses, plan_sync,
};
use opamp_proto::codec::{self, Limits};
use opamp_proto::v1;

/// Each hostile name, a file-system-safe label for its fixture file, and the reason it must
/// be refused with.
fn hostile_names() -> Vec<(&'static str, &'static str, InvalidNameReason)> {
    vec![
        ("../x", "parent-dir", InvalidNameReason::ContainsSlash),
        ("/etc/x", "absolute-path", InvalidNameReason::ContainsSlash),
        ("a\\b", "backslash", InvalidNameReason::ContainsBackslash),
        ("a\0b", "nul-byte", InvalidNameReason::ContainsNul),
        ("..", "dot-dot", InvalidNameReason::DotOrDotDot),
    ]
}

const LEGITIMATE: &str = "otelcol-contrib";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/path-traversal")
}

/// Decodes fixture bytes through the public codec, as the agent and server do.
fn read_offer(path: &Path) -> v1::PackagesAvailable {
    codec::decode(&std::fs::read(path).unwrap(), &Limits::default()).unwrap()
}

fn read_statuses(path: &Path) -> v1::PackageStatuses {
    codec::decode(&std::fs::read(path).unwrap(), &Limits::default()).unwrap()
}

#[test]
fn offered_packages_with_traversal_names_are_rejected() {
    let offer = read_offer(&data_dir().join("packages_available.binpb"));
    assert_eq!(offer.packages.len(), hostile_names().len() + 1);

    let plan = plan_sync(&offer, &InstalledPackages::new());

    // Only the legitimate package is planned, as a plain install.
    assert_eq!(plan.packages().len(), 1);
    let planned = &plan.packages()[0];
    assert_eq!(planned.key.wire_key(), LEGITIMATE);
    assert!(matches!(planned.action, PackageAction::Install { .. }));

    // Every hostile name is rejected, for the right reason, and never becomes a PackageKey.
    assert_eq!(plan.rejected().len(), hostile_names().len());
    for (name, label, reason) in hostile_names() {
        let rejected = plan
            .rejected()
            .iter()
            .find(|r| r.wire_key == name)
            .unwrap_or_else(|| panic!("{label}: not rejected"));
        match &rejected.reason {
            RejectionReason::InvalidName(error) => assert_eq!(error.reason(), &reason, "{label}"),
            other => panic!("{label}: rejected for {other:?}"),
        }
    }
}

#[test]
fn traversal_names_never_remove_installed_packages_outside_the_store() {
    // An agent that has the legitimate package installed gets an offer without it but with
    // the hostile names: the plan removes the legitimate package and touches nothing else.
    let mut offer = read_offer(&data_dir().join("packages_available.binpb"));
    offer.packages.remove(LEGITIMATE);
    let installed = InstalledPackages::new().with_package(
        PackageName::new("otelcol").unwrap(),
        opamp_packages::InstalledPackage::new("1.0.0", vec![1; 32], ContentHash::of(b"x")),
    );
    let plan = plan_sync(&offer, &installed);
    assert_eq!(plan.packages().len(), 1);
    assert_eq!(
        plan.packages()[0].key,
        PackageKey::Named(PackageName::new("otelcol").unwrap())
    );
    assert!(matches!(
        plan.packages()[0].action,
        PackageAction::Remove { .. }
    ));
    assert_eq!(plan.rejected().len(), hostile_names().len());
}

#[test]
fn reported_statuses_with_traversal_names_are_refused() {
    for (name, label, reason) in hostile_names() {
        let statuses = read_statuses(
            &data_dir()
                .join("package_statuses")
                .join(format!("{label}.binpb")),
        );
        assert!(statuses.packages.contains_key(name), "{label}");
        match parse_package_statuses(&statuses) {
            Err(PackagesError::Status(StatusError::InvalidName(error))) => {
                assert_eq!(error.reason(), &reason, "{label}");
            }
            other => panic!("{label}: expected an invalid-name refusal, got {other:?}"),
        }
    }
}

#[test]
fn traversal_names_are_refused_as_package_names() {
    for (name, label, reason) in hostile_names() {
        assert_eq!(
            PackageName::new(name).unwrap_err().reason(),
            &reason,
            "{label}"
        );
        assert!(PackageKey::parse(name).is_err(), "{label}");
    }
}

// ----- generator ----------------------------------------------------------------------------

fn available(version: &str) -> v1::PackageAvailable {
    v1::PackageAvailable {
        r#type: v1::PackageType::TopLevel.into(),
        version: version.to_owned(),
        file: Some(v1::DownloadableFile {
            download_url: "https://127.0.0.1/otelcol".to_owned(),
            content_hash: ContentHash::of(version.as_bytes()).as_bytes().to_vec(),
            ..Default::default()
        }),
        hash: vec![0x42; 32],
    }
}

#[test]
#[ignore = "regenerates tests/data; run with --ignored"]
fn regenerate_path_traversal_fixtures() {
    let dir = data_dir();
    std::fs::create_dir_all(dir.join("package_statuses")).unwrap();

    let mut offer = v1::PackagesAvailable {
        all_packages_hash: vec![0x17; 32],
        ..Default::default()
    };
    offer
        .packages
        .insert(LEGITIMATE.to_owned(), available("1.1.0"));
    for (name, _, _) in hostile_names() {
        offer.packages.insert(name.to_owned(), available("1.1.0"));
    }
    std::fs::write(dir.join("packages_available.binpb"), codec::encode(&offer)).unwrap();

    for (name, label, _) in hostile_names() {
        let mut statuses = v1::PackageStatuses {
            server_provided_all_packages_hash: vec![0x17; 32],
            ..Default::default()
        };
        statuses.packages.insert(
            name.to_owned(),
            v1::PackageStatus {
                name: name.to_owned(),
                agent_has_version: "1.1.0".to_owned(),
                agent_has_hash: vec![0x42; 32],
                status: v1::PackageStatusEnum::Installed.into(),
                ..Default::default()
            },
        );
        std::fs::write(
            dir.join("package_statuses").join(format!("{label}.binpb")),
            codec::encode(&statuses),
        )
        .unwrap();
    }

    std::fs::write(
        dir.join("README.md"),
        "# Attack: package names with path traversal\n\n\
         A hostile server offers packages named `../x`, `/etc/x`, `a\\b`, `a<NUL>b` and `..` \
         next to a legitimate `otelcol-contrib` (`packages_available.binpb`, a protobuf \
         `PackagesAvailable`). A supervisor that stores packages under a directory named after \
         the package would write outside its storage directory.\n\n\
         A hostile agent reports the same names in `PackageStatuses` \
         (`package_statuses/<label>.binpb`, one name per file).\n\n\
         **Must happen:** the agent's sync plan rejects every hostile name with the precise \
         reason (slash, backslash, NUL, `..`) and plans only `otelcol-contrib`; the server's \
         status parser refuses every hostile report; no hostile name ever becomes a \
         `PackageName`. Test: `crates/opamp-packages/tests/attacks.rs`; regenerate with \
         `cargo test -p opamp-packages --test attacks -- --ignored`.\n",
    )
    .unwrap();
}
