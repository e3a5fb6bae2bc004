use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::error::InvalidNameReason;
use crate::offer::{OfferedPackage, PackageOffer};

fn name(text: &str) -> PackageName {
    PackageName::new(text).unwrap()
}

fn key(text: &str) -> PackageKey {
    PackageKey::Named(name(text))
}

fn content(tag: &str) -> ContentHash {
    ContentHash::of(tag.as_bytes())
}

fn offer_of(packages: Vec<OfferedPackage>) -> v1::PackagesAvailable {
    let mut offer = PackageOffer::new();
    for package in packages {
        offer.add(package).unwrap();
    }
    offer.build()
}

fn addon(text: &str, version: &str, file: &str) -> OfferedPackage {
    OfferedPackage::addon(
        name(text),
        version,
        format!("https://d.example/{file}"),
        content(file),
    )
}

/// Installed exactly as `package` of `offer` describes it.
fn installed_as(offer: &v1::PackagesAvailable, text: &str, file: &str) -> InstalledPackage {
    let offered = &offer.packages[text];
    InstalledPackage::new(offered.version.clone(), offered.hash.clone(), content(file))
}

fn only_action(plan: &SyncPlan) -> &PackageAction {
    assert_eq!(plan.packages().len(), 1, "{plan:?}");
    &plan.packages()[0].action
}

#[test]
fn new_package_is_installed() {
    let offer = offer_of(vec![addon("a", "1.0.0", "a1")]);
    let plan = plan_sync(&offer, &InstalledPackages::new());
    assert!(!plan.is_already_applied());
    let PackageAction::Install { target } = only_action(&plan) else {
        panic!("{plan:?}")
    };
    assert_eq!(target.version, "1.0.0");
    assert_eq!(target.download_url, "https://d.example/a1");
    assert_eq!(target.content_hash, content("a1"));
    assert_eq!(target.package_type, v1::PackageType::Addon);
    assert_eq!(target.package_hash, offer.packages["a"].hash);
    assert_eq!(plan.packages()[0].key, key("a"));
    assert!(plan.has_changes());
}

#[test]
fn same_package_hash_is_nothing_to_do() {
    let offer = offer_of(vec![addon("a", "1.0.0", "a1")]);
    let installed =
        InstalledPackages::new().with_package(name("a"), installed_as(&offer, "a", "a1"));
    let plan = plan_sync(&offer, &installed);
    assert!(matches!(
        only_action(&plan),
        PackageAction::NothingToDo { .. }
    ));
    assert!(!plan.has_changes());
}

#[test]
fn higher_semver_is_an_upgrade_and_lower_a_downgrade() {
    let offer = offer_of(vec![addon("a", "v1.10.0", "new")]);
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("1.9.0", vec![1], content("old")),
    );
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Upgrade { from, target } if from == "1.9.0" && target.version == "v1.10.0"
    ));

    let offer = offer_of(vec![addon("a", "1.8.0", "older")]);
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Downgrade { from, target } if from == "1.9.0" && target.version == "1.8.0"
    ));
}

#[test]
fn unordered_versions_are_a_replace() {
    let offer = offer_of(vec![addon("a", "nightly-2", "n2")]);
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("nightly-1", vec![1], content("n1")),
    );
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Replace { from, target } if from == "nightly-1" && target.version == "nightly-2"
    ));
}

#[test]
fn same_version_with_other_content_is_a_redownload() {
    let offer = offer_of(vec![addon("a", "1.0.0", "rebuilt")]);
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("1.0.0", vec![1], content("original")),
    );
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Redownload { installed_content_hash, target }
            if *installed_content_hash == content("original") && target.content_hash == content("rebuilt")
    ));
}

#[test]
fn same_version_and_content_with_new_package_hash_needs_no_download() {
    // For example the download URL moved: the package hash changes, the file does not.
    let offer = offer_of(vec![addon("a", "1.0.0", "same")]);
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("1.0.0", vec![1], content("same")),
    );
    let plan = plan_sync(&offer, &installed);
    let PackageAction::NothingToDo { target } = only_action(&plan) else {
        panic!()
    };
    assert_eq!(target.package_hash, offer.packages["a"].hash);
}

#[test]
fn empty_offered_hash_never_matches() {
    let mut offer = offer_of(vec![addon("a", "1.0.0", "x")]);
    if let Some(package) = offer.packages.get_mut("a") {
        package.hash.clear();
    }
    // The installed package also has an empty hash, yet the content differs: redownload.
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("1.0.0", Vec::new(), content("y")),
    );
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Redownload { .. }
    ));
}

#[test]
fn packages_no_longer_offered_are_removed() {
    let offer = offer_of(vec![addon("keep", "1.0.0", "k")]);
    let installed = InstalledPackages::new()
        .with_package(name("keep"), installed_as(&offer, "keep", "k"))
        .with_package(
            name("gone"),
            InstalledPackage::new("2.0.0", vec![3], content("g")),
        );
    let plan = plan_sync(&offer, &installed);
    assert_eq!(plan.packages().len(), 2);
    assert_eq!(plan.packages()[0].key, key("gone"));
    assert_eq!(
        plan.packages()[0].action,
        PackageAction::Remove {
            installed_version: "2.0.0".into()
        }
    );
    assert_eq!(plan.packages()[0].action.target(), None);
    assert!(matches!(
        plan.packages()[1].action,
        PackageAction::NothingToDo { .. }
    ));
}

#[test]
fn empty_offer_removes_everything() {
    let offer = PackageOffer::new().build();
    let installed = InstalledPackages::new().with_package(
        PackageKey::UnnamedTopLevel,
        InstalledPackage::new("1.0.0", vec![1], content("t")),
    );
    assert!(matches!(
        only_action(&plan_sync(&offer, &installed)),
        PackageAction::Remove { .. }
    ));
}

#[test]
fn matching_all_packages_hash_short_circuits() {
    let offer = offer_of(vec![addon("a", "1.0.0", "a1")]);
    let installed = InstalledPackages::new()
        .with_last_applied_all_packages_hash(offer.all_packages_hash.clone());
    let plan = plan_sync(&offer, &installed);
    assert!(plan.is_already_applied());
    assert!(plan.packages().is_empty());
    assert_eq!(
        plan.offered_all_packages_hash(),
        offer.all_packages_hash.as_slice()
    );
}

#[test]
fn empty_all_packages_hash_never_short_circuits() {
    let mut offer = offer_of(vec![addon("a", "1.0.0", "a1")]);
    offer.all_packages_hash.clear();
    let installed = InstalledPackages::new().with_last_applied_all_packages_hash(Vec::new());
    let plan = plan_sync(&offer, &installed);
    assert!(!plan.is_already_applied());
    assert!(matches!(only_action(&plan), PackageAction::Install { .. }));
}

#[test]
fn unnamed_top_level_is_planned_under_its_own_key() {
    let offer = offer_of(vec![OfferedPackage::top_level(
        PackageKey::UnnamedTopLevel,
        "0.110.0",
        "https://d.example/otelcol",
        content("otelcol"),
    )]);
    let plan = plan_sync(&offer, &InstalledPackages::new());
    assert_eq!(plan.packages()[0].key, PackageKey::UnnamedTopLevel);
    assert!(plan.rejected().is_empty());
}

fn raw_package(kind: i32, file: Option<v1::DownloadableFile>) -> v1::PackageAvailable {
    v1::PackageAvailable {
        r#type: kind,
        version: "1.0.0".into(),
        file,
        hash: vec![1],
    }
}

fn good_file() -> v1::DownloadableFile {
    v1::DownloadableFile {
        download_url: "https://d.example/f".into(),
        content_hash: vec![7; 32],
        ..Default::default()
    }
}

fn rejection_of(wire_key: &str, package: v1::PackageAvailable) -> RejectionReason {
    let offer = v1::PackagesAvailable {
        packages: HashMap::from([
            (wire_key.to_owned(), package),
            ("fine".to_owned(), raw_package(1, Some(good_file()))),
        ]),
        all_packages_hash: vec![9; 32],
    };
    let plan = plan_sync(&offer, &InstalledPackages::new());
    // The rest of the offer is still planned.
    assert_eq!(plan.packages().len(), 1, "{plan:?}");
    assert_eq!(plan.packages()[0].key, key("fine"));
    assert_eq!(plan.rejected().len(), 1, "{plan:?}");
    assert_eq!(
        plan.rejected()[0].wire_key,
        wire_key.chars().take(64).collect::<String>()
    );
    plan.rejected()[0].reason.clone()
}

#[test]
fn rejects_names_that_escape_the_directory() {
    for (wire_key, reason) in [
        ("..", InvalidNameReason::DotOrDotDot),
        ("../../bin/sh", InvalidNameReason::ContainsSlash),
        ("a\\b", InvalidNameReason::ContainsBackslash),
        ("a\0", InvalidNameReason::ContainsNul),
    ] {
        let RejectionReason::InvalidName(error) =
            rejection_of(wire_key, raw_package(1, Some(good_file())))
        else {
            panic!("{wire_key:?}")
        };
        assert_eq!(error.reason(), &reason);
    }
    let long = "n".repeat(300);
    let RejectionReason::InvalidName(error) =
        rejection_of(&long, raw_package(1, Some(good_file())))
    else {
        panic!()
    };
    assert!(matches!(
        error.reason(),
        InvalidNameReason::TooLong { len: 300, .. }
    ));
}

#[test]
fn rejects_unnamed_addon_and_crowded_unnamed_top_level() {
    assert_eq!(
        rejection_of("", raw_package(1, Some(good_file()))),
        RejectionReason::UnnamedAddon
    );
    let offer = v1::PackagesAvailable {
        packages: HashMap::from([
            (String::new(), raw_package(0, Some(good_file()))),
            ("named".to_owned(), raw_package(0, Some(good_file()))),
        ]),
        all_packages_hash: Vec::new(),
    };
    let plan = plan_sync(&offer, &InstalledPackages::new());
    assert_eq!(plan.packages().len(), 1);
    assert_eq!(plan.packages()[0].key, key("named"));
    assert_eq!(
        plan.rejected()[0].reason,
        RejectionReason::UnnamedTopLevelNotAlone
    );
}

#[test]
fn rejects_unknown_type_missing_file_url_and_bad_content_hash() {
    assert_eq!(
        rejection_of("x", raw_package(7, Some(good_file()))),
        RejectionReason::UnknownType { value: 7 }
    );
    assert_eq!(
        rejection_of("x", raw_package(1, None)),
        RejectionReason::MissingFile
    );
    let no_url = v1::DownloadableFile {
        download_url: String::new(),
        ..good_file()
    };
    assert_eq!(
        rejection_of("x", raw_package(1, Some(no_url))),
        RejectionReason::MissingDownloadUrl
    );
    let short = v1::DownloadableFile {
        content_hash: vec![1; 16],
        ..good_file()
    };
    assert_eq!(
        rejection_of("x", raw_package(1, Some(short))),
        RejectionReason::BadContentHash(OfferError::ContentHashLength { len: 16 })
    );
}

#[test]
fn installed_package_whose_offer_is_rejected_is_kept() {
    let offer = v1::PackagesAvailable {
        packages: HashMap::from([("a".to_owned(), raw_package(1, None))]),
        all_packages_hash: Vec::new(),
    };
    let installed = InstalledPackages::new().with_package(
        name("a"),
        InstalledPackage::new("1.0.0", vec![1], content("a")),
    );
    let plan = plan_sync(&offer, &installed);
    assert!(plan.packages().is_empty(), "{plan:?}");
    assert_eq!(plan.rejected().len(), 1);
}

#[test]
fn headers_and_signature_reach_the_target() {
    let offer = offer_of(vec![
        addon("a", "1.0.0", "a")
            .with_signature(vec![1, 2, 3])
            .with_header("K", "V"),
    ]);
    let plan = plan_sync(&offer, &InstalledPackages::new());
    let target = only_action(&plan).target().unwrap();
    assert_eq!(target.signature, vec![1, 2, 3]);
    assert_eq!(target.headers, vec![("K".to_owned(), "V".to_owned())]);
}

#[test]
fn installed_packages_accessors() {
    let mut installed = InstalledPackages::new();
    assert_eq!(installed.last_applied_all_packages_hash(), None);
    installed.insert(name("a"), InstalledPackage::new("1", vec![1], content("a")));
    let package = installed.get(&key("a")).unwrap();
    assert_eq!(package.version(), "1");
    assert_eq!(package.package_hash(), &[1]);
    assert_eq!(package.content_hash(), &content("a"));
    assert_eq!(installed.iter().count(), 1);
    assert!(installed.remove(&key("a")).is_some());
    installed.set_last_applied_all_packages_hash(vec![5]);
    assert_eq!(installed.last_applied_all_packages_hash(), Some(&[5u8][..]));
}

// ---- property tests ----

fn arb_wire_package() -> impl Strategy<Value = v1::PackageAvailable> {
    (
        -1..3i32,
        prop_oneof![
            Just("1.0.0".to_owned()),
            Just("v2.0.0".to_owned()),
            ".{0,6}"
        ],
        prop::option::of((
            ".{0,6}",
            prop_oneof![
                prop::collection::vec(any::<u8>(), 32),
                prop::collection::vec(any::<u8>(), 0..40)
            ],
            prop::collection::vec(any::<u8>(), 0..4),
        )),
        prop::collection::vec(any::<u8>(), 0..3),
    )
        .prop_map(|(kind, version, file, hash)| v1::PackageAvailable {
            r#type: kind,
            version,
            file: file.map(
                |(download_url, content_hash, signature)| v1::DownloadableFile {
                    download_url,
                    content_hash,
                    signature,
                    headers: None,
                },
            ),
            hash,
        })
}

fn arb_wire_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("..".to_owned()),
        "[a-c]{1,2}",
        ".{0,6}"
    ]
}

proptest! {
    /// Arbitrary offers and installations: the planner never panics, accounts for every
    /// offered key exactly once (planned or rejected), and removes only what is not offered.
    #[test]
    fn planner_is_total_and_accounts_for_every_package(
        offered in prop::collection::hash_map(arb_wire_key(), arb_wire_package(), 0..8),
        installed_list in prop::collection::vec(
            ("[a-c]{1,2}", ".{0,6}", prop::collection::vec(any::<u8>(), 0..3), any::<[u8; 32]>()),
            0..6,
        ),
        all_hash in prop::collection::vec(any::<u8>(), 0..3),
        last_applied in prop::option::of(prop::collection::vec(any::<u8>(), 0..3)),
    ) {
        let offer = v1::PackagesAvailable { packages: offered, all_packages_hash: all_hash };
        let mut installed = InstalledPackages::new();
        for (text, version, package_hash, content_hash) in installed_list {
            installed.insert(name(&text), InstalledPackage::new(version, package_hash, ContentHash::from_bytes(content_hash)));
        }
        if let Some(hash) = last_applied {
            installed.set_last_applied_all_packages_hash(hash);
        }

        let plan = plan_sync(&offer, &installed);
        if plan.is_already_applied() {
            prop_assert!(plan.packages().is_empty() && plan.rejected().is_empty());
            prop_assert!(!offer.all_packages_hash.is_empty());
            return Ok(());
        }
        let offered_planned = plan.packages().iter().filter(|p| p.action.target().is_some()).count();
        prop_assert_eq!(offered_planned + plan.rejected().len(), offer.packages.len());
        for planned in plan.packages() {
            let offered_here = offer.packages.contains_key(planned.key.wire_key());
            let is_remove = matches!(planned.action, PackageAction::Remove { .. });
            prop_assert_eq!(is_remove, !offered_here);
            if is_remove {
                prop_assert!(installed.get(&planned.key).is_some());
            }
            if matches!(planned.action, PackageAction::Install { .. }) {
                prop_assert!(installed.get(&planned.key).is_none());
            }
        }
        // Keys are sorted and unique.
        prop_assert!(plan.packages().windows(2).all(|w| w[0].key < w[1].key));
    }
}
