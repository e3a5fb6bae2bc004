use proptest::prelude::*;

use super::*;
use crate::name::PackageName;

fn key(text: &str) -> PackageKey {
    PackageKey::Named(PackageName::new(text).unwrap())
}

fn has() -> AgentHas {
    AgentHas::new("1.0.0", vec![1; 32]).unwrap()
}

fn offered() -> ServerOffered {
    ServerOffered::new("2.0.0", vec![2; 32]).unwrap()
}

fn status_error(result: Result<(PackageKey, PackageState), PackagesError>) -> StatusError {
    match result {
        Err(PackagesError::Status(error)) => error,
        other => panic!("expected a status error, got {other:?}"),
    }
}

#[test]
fn installed_locally_sets_only_agent_has() {
    let wire = PackageState::Installed {
        has: has(),
        offered: None,
    }
    .to_proto(&key("a"));
    assert_eq!(wire.name, "a");
    assert_eq!(wire.status, i32::from(v1::PackageStatusEnum::Installed));
    assert_eq!(wire.agent_has_version, "1.0.0");
    assert_eq!(wire.agent_has_hash, vec![1; 32]);
    assert!(wire.server_offered_version.is_empty() && wire.server_offered_hash.is_empty());
    assert!(wire.error_message.is_empty() && wire.download_details.is_none());
}

#[test]
fn installed_from_offer_sets_both_pairs() {
    let wire = PackageState::Installed {
        has: has(),
        offered: Some(offered()),
    }
    .to_proto(&key("a"));
    assert_eq!(wire.agent_has_version, "1.0.0");
    assert_eq!(wire.server_offered_version, "2.0.0");
    assert_eq!(wire.server_offered_hash, vec![2; 32]);
}

#[test]
fn first_install_in_progress_sets_only_server_offered() {
    for state in [
        PackageState::InstallPending {
            has: None,
            offered: offered(),
        },
        PackageState::Installing {
            has: None,
            offered: offered(),
        },
        PackageState::Downloading {
            has: None,
            offered: offered(),
            progress: None,
        },
    ] {
        let wire = state.to_proto(&key("a"));
        assert!(
            wire.agent_has_version.is_empty() && wire.agent_has_hash.is_empty(),
            "{state:?}"
        );
        assert_eq!(wire.server_offered_hash, vec![2; 32], "{state:?}");
        assert!(
            wire.error_message.is_empty() && wire.download_details.is_none(),
            "{state:?}"
        );
        assert_eq!(wire.status, i32::from(state.status()));
    }
}

#[test]
fn downloading_carries_details_and_nothing_else_does() {
    let wire = PackageState::Downloading {
        has: Some(has()),
        offered: offered(),
        progress: Some(DownloadProgress::new(12.5, 2048.0).unwrap()),
    }
    .to_proto(&key("a"));
    let details = wire.download_details.unwrap();
    assert_eq!(details.download_percent, 12.5);
    assert_eq!(details.download_bytes_per_second, 2048.0);
    assert_eq!(wire.status, i32::from(v1::PackageStatusEnum::Downloading));
}

#[test]
fn install_failed_keeps_previous_version_and_error() {
    let wire = PackageState::InstallFailed {
        has: Some(has()),
        offered: offered(),
        error_message: "checksum mismatch".into(),
    }
    .to_proto(&key("a"));
    assert_eq!(wire.agent_has_version, "1.0.0");
    assert_eq!(wire.server_offered_version, "2.0.0");
    assert_eq!(wire.error_message, "checksum mismatch");
    assert!(wire.download_details.is_none());
}

#[test]
fn constructors_refuse_empty_required_fields() {
    assert_eq!(
        AgentHas::new("", vec![1]).unwrap_err(),
        StatusError::EmptyField {
            field: "agent_has_version"
        }
        .into()
    );
    assert_eq!(
        AgentHas::new("1", Vec::new()).unwrap_err(),
        StatusError::EmptyField {
            field: "agent_has_hash"
        }
        .into()
    );
    assert_eq!(
        ServerOffered::new("1", Vec::new()).unwrap_err(),
        StatusError::EmptyField {
            field: "server_offered_hash"
        }
        .into()
    );
    assert_eq!(ServerOffered::new("", vec![1]).unwrap().version(), "");
}

#[test]
fn download_progress_is_range_checked() {
    assert!(DownloadProgress::new(0.0, 0.0).is_ok());
    assert!(DownloadProgress::new(100.0, 1e12).is_ok());
    for (percent, rate) in [
        (-0.1, 0.0),
        (100.1, 0.0),
        (f64::NAN, 0.0),
        (50.0, -1.0),
        (50.0, f64::INFINITY),
        (50.0, f64::NAN),
    ] {
        assert!(
            DownloadProgress::new(percent, rate).is_err(),
            "{percent} {rate}"
        );
    }
}

#[test]
fn builder_sets_top_level_fields() {
    let statuses = PackageStatusesBuilder::new(vec![9; 32])
        .package(
            PackageKey::UnnamedTopLevel,
            PackageState::Installed {
                has: has(),
                offered: None,
            },
        )
        .package(
            key("addon"),
            PackageState::Installing {
                has: None,
                offered: offered(),
            },
        )
        .error_message("offer had two unnamed packages")
        .build();
    assert_eq!(statuses.server_provided_all_packages_hash, vec![9; 32]);
    assert_eq!(statuses.error_message, "offer had two unnamed packages");
    assert_eq!(statuses.packages.len(), 2);
    assert_eq!(statuses.packages[""].name, "");
    assert_eq!(statuses.packages["addon"].name, "addon");

    let without_error = PackageStatusesBuilder::new(Vec::new()).build();
    assert!(without_error.error_message.is_empty());
    let parsed = parse_package_statuses(&statuses).unwrap();
    assert_eq!(
        parsed.error_message.as_deref(),
        Some("offer had two unnamed packages")
    );
    assert_eq!(parsed.server_provided_all_packages_hash, vec![9; 32]);
    assert_eq!(
        parse_package_statuses(&without_error)
            .unwrap()
            .error_message,
        None
    );
}

fn wire(status: v1::PackageStatusEnum) -> v1::PackageStatus {
    v1::PackageStatus {
        name: "a".into(),
        agent_has_version: "1.0.0".into(),
        agent_has_hash: vec![1],
        server_offered_version: "2.0.0".into(),
        server_offered_hash: vec![2],
        status: status.into(),
        error_message: String::new(),
        download_details: None,
    }
}

#[test]
fn parser_refuses_installed_without_agent_has() {
    let mut status = wire(v1::PackageStatusEnum::Installed);
    status.agent_has_version.clear();
    status.agent_has_hash.clear();
    assert_eq!(
        status_error(parse_package_status(&status)),
        StatusError::InstalledWithoutAgentHas { name: "a".into() }
    );
}

#[test]
fn parser_refuses_in_progress_states_without_offer() {
    for kind in [
        v1::PackageStatusEnum::InstallPending,
        v1::PackageStatusEnum::Installing,
        v1::PackageStatusEnum::Downloading,
        v1::PackageStatusEnum::InstallFailed,
    ] {
        let mut status = wire(kind);
        status.server_offered_version.clear();
        status.server_offered_hash.clear();
        assert_eq!(
            status_error(parse_package_status(&status)),
            StatusError::MissingServerOffered {
                name: "a".into(),
                status: kind.as_str_name(),
            }
        );
    }
}

#[test]
fn parser_refuses_half_set_pairs() {
    let mut status = wire(v1::PackageStatusEnum::Installed);
    status.agent_has_hash.clear();
    assert_eq!(
        status_error(parse_package_status(&status)),
        StatusError::HalfSetPair {
            name: "a".into(),
            set: "agent_has_version",
            missing: "agent_has_hash",
        }
    );
    let mut status = wire(v1::PackageStatusEnum::Installed);
    status.agent_has_version.clear();
    assert_eq!(
        status_error(parse_package_status(&status)),
        StatusError::HalfSetPair {
            name: "a".into(),
            set: "agent_has_hash",
            missing: "agent_has_version",
        }
    );
    let mut status = wire(v1::PackageStatusEnum::Installing);
    status.server_offered_hash.clear();
    assert_eq!(
        status_error(parse_package_status(&status)),
        StatusError::HalfSetPair {
            name: "a".into(),
            set: "server_offered_version",
            missing: "server_offered_hash",
        }
    );
    // An offer without a version is legal.
    let mut status = wire(v1::PackageStatusEnum::Installing);
    status.server_offered_version.clear();
    assert!(parse_package_status(&status).is_ok());
}

#[test]
fn parser_refuses_error_message_outside_install_failed() {
    for kind in [
        v1::PackageStatusEnum::Installed,
        v1::PackageStatusEnum::InstallPending,
        v1::PackageStatusEnum::Installing,
        v1::PackageStatusEnum::Downloading,
    ] {
        let mut status = wire(kind);
        status.error_message = "boom".into();
        assert_eq!(
            status_error(parse_package_status(&status)),
            StatusError::UnexpectedErrorMessage {
                name: "a".into(),
                status: kind.as_str_name(),
            }
        );
    }
}

#[test]
fn parser_refuses_download_details_outside_downloading() {
    for kind in [
        v1::PackageStatusEnum::Installed,
        v1::PackageStatusEnum::InstallPending,
        v1::PackageStatusEnum::Installing,
        v1::PackageStatusEnum::InstallFailed,
    ] {
        let mut status = wire(kind);
        status.download_details = Some(v1::PackageDownloadDetails::default());
        assert_eq!(
            status_error(parse_package_status(&status)),
            StatusError::UnexpectedDownloadDetails {
                name: "a".into(),
                status: kind.as_str_name(),
            }
        );
    }
}

#[test]
fn parser_refuses_invalid_progress_unknown_status_and_bad_names() {
    let mut status = wire(v1::PackageStatusEnum::Downloading);
    status.download_details = Some(v1::PackageDownloadDetails {
        download_percent: 101.0,
        download_bytes_per_second: 0.0,
    });
    assert!(matches!(
        status_error(parse_package_status(&status)),
        StatusError::InvalidDownloadProgress { .. }
    ));

    let mut status = wire(v1::PackageStatusEnum::Installed);
    status.status = 42;
    assert_eq!(
        status_error(parse_package_status(&status)),
        StatusError::UnknownStatus {
            name: "a".into(),
            value: 42
        }
    );

    let mut status = wire(v1::PackageStatusEnum::Installed);
    status.name = "../x".into();
    assert!(matches!(
        status_error(parse_package_status(&status)),
        StatusError::InvalidName(_)
    ));
}

#[test]
fn parser_refuses_key_name_mismatch() {
    let statuses = v1::PackageStatuses {
        packages: [("b".to_owned(), wire(v1::PackageStatusEnum::Installed))].into(),
        ..Default::default()
    };
    assert_eq!(
        parse_package_statuses(&statuses).unwrap_err(),
        StatusError::KeyNameMismatch {
            key: "b".into(),
            name: "a".into()
        }
        .into()
    );
}

#[test]
fn install_failed_without_message_is_accepted() {
    let status = wire(v1::PackageStatusEnum::InstallFailed);
    let (_, state) = parse_package_status(&status).unwrap();
    assert!(
        matches!(state, PackageState::InstallFailed { error_message, .. } if error_message.is_empty())
    );
}

// ---- property tests ----

fn arb_has() -> impl Strategy<Value = AgentHas> {
    (".{1,6}", prop::collection::vec(any::<u8>(), 1..5))
        .prop_map(|(version, hash)| AgentHas::new(version, hash).unwrap())
}

fn arb_offered() -> impl Strategy<Value = ServerOffered> {
    (".{0,6}", prop::collection::vec(any::<u8>(), 1..5))
        .prop_map(|(version, hash)| ServerOffered::new(version, hash).unwrap())
}

fn arb_state() -> impl Strategy<Value = PackageState> {
    let progress = prop::option::of((0.0..=100.0f64, 0.0..1e9f64))
        .prop_map(|p| p.map(|(percent, rate)| DownloadProgress::new(percent, rate).unwrap()));
    prop_oneof![
        (arb_has(), prop::option::of(arb_offered()))
            .prop_map(|(has, offered)| PackageState::Installed { has, offered }),
        (prop::option::of(arb_has()), arb_offered())
            .prop_map(|(has, offered)| PackageState::InstallPending { has, offered }),
        (prop::option::of(arb_has()), arb_offered())
            .prop_map(|(has, offered)| PackageState::Installing { has, offered }),
        (prop::option::of(arb_has()), arb_offered(), progress).prop_map(
            |(has, offered, progress)| PackageState::Downloading {
                has,
                offered,
                progress
            }
        ),
        (prop::option::of(arb_has()), arb_offered(), ".{0,10}").prop_map(
            |(has, offered, error_message)| PackageState::InstallFailed {
                has,
                offered,
                error_message
            }
        ),
    ]
}

proptest! {
    /// Every typed state survives the trip through the wire form unchanged, so `to_proto`
    /// only ever produces messages the strict parser accepts.
    #[test]
    fn typed_states_round_trip_through_proto(
        states in prop::collection::btree_map("[a-z]{1,4}", arb_state(), 0..6),
        hash in prop::collection::vec(any::<u8>(), 0..4),
    ) {
        let mut builder = PackageStatusesBuilder::new(hash.clone());
        for (text, state) in &states {
            builder = builder.package(key(text), state.clone());
        }
        let parsed = parse_package_statuses(&builder.build()).unwrap();
        let expected: BTreeMap<PackageKey, PackageState> =
            states.into_iter().map(|(text, state)| (key(&text), state)).collect();
        prop_assert_eq!(parsed.packages, expected);
        prop_assert_eq!(parsed.server_provided_all_packages_hash, hash);
    }

    /// The parser never panics on arbitrary messages.
    #[test]
    fn parser_is_total(
        name in ".{0,4}",
        has_version in ".{0,2}",
        has_hash in prop::collection::vec(any::<u8>(), 0..2),
        offered_version in ".{0,2}",
        offered_hash in prop::collection::vec(any::<u8>(), 0..2),
        status in -1..6i32,
        error_message in ".{0,2}",
        details in prop::option::of((any::<f64>(), any::<f64>())),
    ) {
        let message = v1::PackageStatus {
            name,
            agent_has_version: has_version,
            agent_has_hash: has_hash,
            server_offered_version: offered_version,
            server_offered_hash: offered_hash,
            status,
            error_message,
            download_details: details.map(|(download_percent, download_bytes_per_second)| {
                v1::PackageDownloadDetails { download_percent, download_bytes_per_second }
            }),
        };
        if let Ok((key, state)) = parse_package_status(&message) {
            // Whatever parses re-encodes to the same message.
            prop_assert_eq!(state.to_proto(&key), message);
        }
    }
}
