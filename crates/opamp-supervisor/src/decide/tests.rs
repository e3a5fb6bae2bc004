//! Table and property tests of [`decide`] and [`StatusReport`].

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opamp_packages::PackageState;
use opamp_proto::v1;
use opamp_verify::{
    ContentHash, DowngradeAuthorisation, KeyRing, PublicKey, ReleaseSigner, Statement, TrustPolicy,
    TrustedKey,
};
use proptest::prelude::*;

use super::*;
use crate::journal::InstalledState;

const NAME: &str = "otelcol";

/// A release key, the policy that trusts it, and a fixed clock.
pub(crate) struct Release {
    signer: ReleaseSigner,
    pub(crate) policy: TrustPolicy,
    pub(crate) now: SystemTime,
}

impl Release {
    pub(crate) fn new() -> Self {
        let signer = ReleaseSigner::generate_ed25519().expect("key");
        let mut keys = KeyRing::new();
        let public = signer.public_key().to_spki_pem().expect("pem");
        keys.trust(TrustedKey::new(
            PublicKey::from_spki_pem(&public).expect("key"),
        ));
        Self {
            signer,
            policy: TrustPolicy::new(keys),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    /// A signed top-level offer of `version` whose file is `content`; `variant` changes the
    /// server's package hash (for example a new download URL) without changing the file.
    pub(crate) fn package(
        &self,
        version: &str,
        content: &[u8],
        variant: u8,
    ) -> v1::PackageAvailable {
        self.package_with(version, content, variant, DowngradeAuthorisation::Forbidden)
    }

    fn package_with(
        &self,
        version: &str,
        content: &[u8],
        variant: u8,
        downgrade: DowngradeAuthorisation,
    ) -> v1::PackageAvailable {
        let hash = ContentHash::of(content);
        let expiry = self.now + Duration::from_secs(3600);
        let statement = Statement::new(NAME, version, hash, content.len() as u64, expiry)
            .expect("statement")
            .with_downgrade(downgrade);
        v1::PackageAvailable {
            r#type: v1::PackageType::TopLevel as i32,
            version: version.to_owned(),
            file: Some(v1::DownloadableFile {
                download_url: format!("https://example.invalid/{version}/{variant}"),
                content_hash: hash.as_bytes().to_vec(),
                signature: self.signer.sign_statement(&statement).expect("sign"),
                headers: None,
            }),
            hash: package_hash(version, content, variant),
        }
    }
}

fn package_hash(version: &str, content: &[u8], variant: u8) -> Vec<u8> {
    let mut hash = ContentHash::of(format!("{version}/{variant}").as_bytes())
        .as_bytes()
        .to_vec();
    hash.extend_from_slice(&ContentHash::of(content).as_bytes()[..4]);
    hash
}

fn offer(packages: Vec<(&str, v1::PackageAvailable)>, all: u8) -> v1::PackagesAvailable {
    v1::PackagesAvailable {
        packages: packages
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<HashMap<_, _>>(),
        all_packages_hash: vec![all; 32],
    }
}

fn running_from(package: &v1::PackageAvailable) -> Running {
    let content = package.file.as_ref().map(|f| f.content_hash.clone());
    Running::new(
        NAME,
        &package.version,
        package.hash.clone(),
        content.and_then(|c| ContentHash::from_slice(&c).ok()),
    )
}

fn decide_with(
    release: &Release,
    offer: &v1::PackagesAvailable,
    running: &Running,
    state: &InstalledState,
    floor: &RollbackFloor,
    in_flight: Option<&InFlight>,
) -> Decision {
    let facts =
        Facts::new(running, state, floor, &release.policy, release.now).in_flight(in_flight);
    decide(offer, &facts)
}

/// [`decide_with`] on a host with no failed offers and no floor.
fn decide_plain(release: &Release, offer: &v1::PackagesAvailable, running: &Running) -> Decision {
    decide_with(
        release,
        offer,
        running,
        &InstalledState::default(),
        &RollbackFloor::default(),
        None,
    )
}

/// A decision to install 1.1.0 over `running`, for tests elsewhere in the crate.
pub(crate) fn install_decision(running: &Running) -> Decision {
    let release = Release::new();
    let offer = offer(vec![(NAME, release.package("1.1.0", b"new", 0))], 1);
    let mut running = running.clone();
    running.name = NAME.to_owned();
    decide_plain(&release, &offer, &running)
}

fn collector_status(decision: &Decision, running: &Running) -> v1::PackageStatus {
    let report = StatusReport::for_decision(decision, running).expect("a report");
    report.to_proto().packages[NAME].clone()
}

#[test]
fn a_new_version_is_installed() {
    let release = Release::new();
    let running = running_from(&release.package("1.0.0", b"old", 0));
    let offer = offer(vec![(NAME, release.package("1.1.0", b"new", 0))], 1);
    let decision = decide_plain(&release, &offer, &running);
    assert!(matches!(
        decision.collector,
        CollectorDecision::Install { .. }
    ));
    let status = collector_status(&decision, &running);
    assert_eq!(status.status, v1::PackageStatusEnum::InstallPending as i32);
    assert_eq!(status.agent_has_version, "1.0.0");
    assert_eq!(status.server_offered_version, "1.1.0");
}

/// The bug this module was written for: the same offer again after it was installed (the
/// server restarted, reconnected, or re-sends on every heartbeat) was reported as a refused
/// foreign package with no version.
#[test]
fn the_installed_offer_sent_again_is_reported_installed_whatever_the_aggregate_hash() {
    let release = Release::new();
    let installed = release.package("1.1.0", b"new", 0);
    let running = running_from(&installed);
    for all in [1, 2] {
        let offer = offer(vec![(NAME, installed.clone())], all);
        let decision = decide_plain(&release, &offer, &running);
        assert!(
            matches!(
                decision.collector,
                CollectorDecision::AlreadyInstalled { .. }
            ),
            "{:?}",
            decision.collector
        );
        assert!(decision.others.is_empty());
        let status = collector_status(&decision, &running);
        assert_eq!(status.status, v1::PackageStatusEnum::Installed as i32);
        assert_eq!(status.agent_has_version, "1.1.0");
        assert_eq!(status.agent_has_hash, installed.hash);
        assert!(status.error_message.is_empty());
    }
}

#[test]
fn a_restarted_server_with_new_package_hashes_gets_installed_for_the_same_file() {
    let release = Release::new();
    let running = running_from(&release.package("1.1.0", b"new", 0));
    // Same version and file, another server hash (a fresh database, another URL).
    let resent = release.package("1.1.0", b"new", 7);
    let offer = offer(vec![(NAME, resent.clone())], 3);
    let decision = decide_plain(&release, &offer, &running);
    assert!(matches!(
        decision.collector,
        CollectorDecision::AlreadyInstalled { .. }
    ));
    let status = collector_status(&decision, &running);
    assert_eq!(
        status.agent_has_hash, resent.hash,
        "the new hash is what the agent has now"
    );
    // Same version but another file is not the same package.
    let other_file = release.package("1.1.0", b"changed", 7);
    let offer = self::offer(vec![(NAME, other_file)], 4);
    let decision = decide_plain(&release, &offer, &running);
    assert!(matches!(
        decision.collector,
        CollectorDecision::Install { .. }
    ));
}

#[test]
fn a_failed_offer_is_reported_again_and_retried_only_once_it_changes() {
    let release = Release::new();
    let running = running_from(&release.package("1.0.0", b"old", 0));
    let bad = release.package("1.2.0", b"bad", 0);
    let mut state = InstalledState::default();
    state.record_failure(NAME, "1.2.0", bad.hash.clone(), "health gate failed");
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, bad.clone())], 1),
        &running,
        &state,
        &RollbackFloor::default(),
        None,
    );
    assert!(matches!(
        &decision.collector,
        CollectorDecision::PreviouslyFailed { error_message, .. } if error_message == "health gate failed"
    ));
    let status = collector_status(&decision, &running);
    assert_eq!(status.status, v1::PackageStatusEnum::InstallFailed as i32);
    assert_eq!(status.agent_has_version, "1.0.0");
    assert_eq!(status.server_offered_version, "1.2.0");
    let changed = release.package("1.2.0", b"bad", 1);
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, changed)], 2),
        &running,
        &state,
        &RollbackFloor::default(),
        None,
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Install { .. }
    ));
}

#[test]
fn an_offer_during_an_install_is_left_pre_empts_or_waits_by_step() {
    let release = Release::new();
    let running = running_from(&release.package("1.0.0", b"old", 0));
    let first = release.package("1.1.0", b"new", 0);
    let newer = release.package("1.2.0", b"newer", 0);
    let state = InstalledState::default();
    let floor = RollbackFloor::default();
    let downloading = InFlight::new(first.hash.clone(), InstallStep::Downloading);
    let same = decide_with(
        &release,
        &offer(vec![(NAME, first.clone())], 1),
        &running,
        &state,
        &floor,
        Some(&downloading),
    );
    assert!(matches!(
        same.collector,
        CollectorDecision::InstallingAlready
    ));
    assert!(StatusReport::for_decision(&same, &running).is_none());
    let preempt = decide_with(
        &release,
        &offer(vec![(NAME, newer.clone())], 2),
        &running,
        &state,
        &floor,
        Some(&downloading),
    );
    assert!(matches!(
        preempt.collector,
        CollectorDecision::Install { .. }
    ));
    let back = decide_with(
        &release,
        &offer(vec![(NAME, release.package("1.0.0", b"old", 0))], 3),
        &running,
        &state,
        &floor,
        Some(&downloading),
    );
    assert!(
        matches!(back.collector, CollectorDecision::AlreadyInstalled { .. }),
        "the server went back to what runs"
    );
    for step in [
        InstallStep::Stopping,
        InstallStep::Swapping,
        InstallStep::HealthGate,
    ] {
        let busy = InFlight::new(first.hash.clone(), step);
        let wait = decide_with(
            &release,
            &offer(vec![(NAME, newer.clone())], 2),
            &running,
            &state,
            &floor,
            Some(&busy),
        );
        assert!(
            matches!(wait.collector, CollectorDecision::AfterCurrentInstall),
            "{step:?}"
        );
    }
}

#[test]
fn an_offer_without_the_collector_keeps_it_and_reports_it_installed() {
    let release = Release::new();
    let running = running_from(&release.package("1.1.0", b"new", 0));
    let mut addon = release.package("0.3.0", b"plugin", 0);
    addon.r#type = v1::PackageType::Addon as i32;
    let decision = decide_plain(&release, &offer(vec![("plugin", addon)], 5), &running);
    assert!(matches!(decision.collector, CollectorDecision::NotOffered));
    let report = StatusReport::for_decision(&decision, &running)
        .expect("report")
        .to_proto();
    assert_eq!(
        report.packages[NAME].status,
        v1::PackageStatusEnum::Installed as i32
    );
    assert_eq!(report.packages[NAME].agent_has_version, "1.1.0");
    let plugin = &report.packages["plugin"];
    assert_eq!(plugin.status, v1::PackageStatusEnum::InstallFailed as i32);
    assert!(
        plugin
            .error_message
            .contains("add-on packages are not supported"),
        "{}",
        plugin.error_message
    );
    assert!(plugin.agent_has_version.is_empty());
    assert_eq!(report.server_provided_all_packages_hash, vec![5; 32]);
}

#[test]
fn foreign_packages_are_reported_bounded_and_in_name_order() {
    let release = Release::new();
    let running = running_from(&release.package("1.0.0", b"old", 0));
    let mut packages = vec![(NAME.to_owned(), release.package("1.1.0", b"new", 0))];
    for i in 0..100 {
        let mut other = release.package("2.0.0", b"x", 0);
        other.r#type = v1::PackageType::Addon as i32;
        packages.push((format!("addon-{i:03}"), other));
    }
    let mut invalid = release.package("2.0.0", b"x", 0);
    invalid.r#type = v1::PackageType::Addon as i32;
    packages.push(("../../etc/passwd".to_owned(), invalid));
    let offer = v1::PackagesAvailable {
        packages: packages.into_iter().collect(),
        all_packages_hash: vec![1; 32],
    };
    let decision = decide_plain(&release, &offer, &running);
    assert!(
        matches!(decision.collector, CollectorDecision::Install { .. }),
        "the collector is still found"
    );
    assert_eq!(decision.others.len(), MAX_OTHER_STATUSES);
    assert_eq!(decision.others[0].key.wire_key(), "addon-000");
    assert!(
        decision
            .others
            .iter()
            .all(|o| !o.key.wire_key().contains('/'))
    );
}

#[test]
fn offers_that_cannot_be_installed_are_refused_before_any_download() {
    let release = Release::new();
    let running = running_from(&release.package("1.1.0", b"new", 0));
    let state = InstalledState::default();
    let floor = RollbackFloor::default();
    // Signed by another key.
    let stranger = Release::new();
    let foreign = stranger.package("1.2.0", b"x", 0);
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, foreign)], 1),
        &running,
        &state,
        &floor,
        None,
    );
    assert!(matches!(
        &decision.collector,
        CollectorDecision::Refused {
            error: InstallError::Verify { .. },
            remember: true,
            ..
        }
    ));
    let status = collector_status(&decision, &running);
    assert!(
        status
            .error_message
            .contains("the running collector was not changed"),
        "{}",
        status.error_message
    );
    // Unsigned.
    let mut unsigned = release.package("1.2.0", b"x", 0);
    if let Some(file) = unsigned.file.as_mut() {
        file.signature.clear();
    }
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, unsigned)], 1),
        &running,
        &state,
        &floor,
        None,
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Refused { remember: true, .. }
    ));
    // A content hash that is not SHA-256.
    let mut malformed = release.package("1.2.0", b"x", 0);
    if let Some(file) = malformed.file.as_mut() {
        file.content_hash = vec![1, 2, 3];
    }
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, malformed)], 1),
        &running,
        &state,
        &floor,
        None,
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Refused {
            error: InstallError::InvalidOffer { .. },
            ..
        }
    ));
    // The configured collector package offered as an add-on.
    let mut addon = release.package("1.2.0", b"x", 0);
    addon.r#type = v1::PackageType::Addon as i32;
    let offers = offer(vec![(NAME, addon)], 1);
    let facts = Facts::new(&running, &state, &floor, &release.policy, release.now)
        .collector_package(Some(NAME));
    let decision = decide(&offers, &facts);
    assert!(matches!(
        decision.collector,
        CollectorDecision::Refused {
            error: InstallError::NotTopLevel { .. },
            ..
        }
    ));
}

#[test]
fn downgrades_below_the_floor_need_a_signed_authorisation() {
    let release = Release::new();
    let running = running_from(&release.package("1.1.0", b"new", 0));
    let state = InstalledState::default();
    let mut floor = RollbackFloor::default();
    floor.raise(NAME, "1.1.0");
    let old = release.package("1.0.0", b"old", 0);
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, old)], 1),
        &running,
        &state,
        &floor,
        None,
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Refused { remember: true, .. }
    ));
    let authorised = release.package_with(
        "1.0.0",
        b"old",
        1,
        DowngradeAuthorisation::AllowFromAtMost(semver::Version::new(1, 1, 0)),
    );
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, authorised)], 2),
        &running,
        &state,
        &floor,
        None,
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Install { .. }
    ));
}

/// A corrupted or unparsable floor must refuse downgrades (and everything else) until reset,
/// and such a refusal is not remembered as a failed offer.
#[test]
fn an_unknown_or_unparsable_floor_refuses_every_install() {
    let release = Release::new();
    let running = running_from(&release.package("1.1.0", b"new", 0));
    let state = InstalledState::default();
    let old = release.package("1.0.0", b"old", 0);
    let newer = release.package("1.2.0", b"newer", 0);
    let mut unparsable = RollbackFloor::default();
    unparsable.versions.insert(NAME.into(), "garbage".into());
    for floor in [
        RollbackFloor::unknown("both copies are corrupt"),
        unparsable,
    ] {
        for package in [&old, &newer] {
            let decision = decide_with(
                &release,
                &offer(vec![(NAME, package.clone())], 1),
                &running,
                &state,
                &floor,
                None,
            );
            assert!(
                matches!(
                    decision.collector,
                    CollectorDecision::Refused {
                        error: InstallError::RollbackFloorUnknown(_),
                        remember: false,
                        ..
                    }
                ),
                "{:?}",
                decision.collector
            );
        }
    }
}

#[test]
fn statuses_never_go_back_after_an_outcome() {
    let release = Release::new();
    let running = running_from(&release.package("1.0.0", b"old", 0));
    let target = release.package("1.1.0", b"new", 0);
    let decision = decide_plain(&release, &offer(vec![(NAME, target.clone())], 1), &running);
    let mut report = StatusReport::for_decision(&decision, &running).expect("report");
    report.progress(&crate::install::InstallEvent::Step(InstallStep::Swapping));
    let after = running_from(&target);
    report.installed(&after);
    report.progress(&crate::install::InstallEvent::Step(InstallStep::HealthGate));
    assert!(matches!(
        report.collector(),
        Some(PackageState::Installed { .. })
    ));
    let wire = report.to_proto();
    assert_eq!(wire.packages[NAME].agent_has_version, "1.1.0");
    assert_eq!(wire.packages[NAME].agent_has_hash, target.hash);
}

/// What the worker does with a decision and an install outcome, for the properties below.
struct Host {
    running: Running,
    state: InstalledState,
    floor: RollbackFloor,
    reported: Option<v1::PackageStatus>,
}

impl Host {
    fn apply(
        &mut self,
        release: &Release,
        offer: &v1::PackagesAvailable,
        install_fails: bool,
    ) -> Decision {
        let decision = decide_with(
            release,
            offer,
            &self.running,
            &self.state,
            &self.floor,
            None,
        );
        let mut report = StatusReport::for_decision(&decision, &self.running);
        match &decision.collector {
            CollectorDecision::AlreadyInstalled { offered } => {
                self.running.server_hash = offered.available.hash.clone();
            }
            CollectorDecision::Refused {
                offered,
                error,
                remember: true,
            } => {
                self.state.record_failure(
                    &offered.name,
                    &offered.available.version,
                    offered.available.hash.clone(),
                    &error.to_string(),
                );
            }
            CollectorDecision::Install { offered, .. } => {
                if install_fails {
                    self.state.record_failure(
                        &offered.name,
                        &offered.available.version,
                        offered.available.hash.clone(),
                        "health gate failed",
                    );
                    if let Some(report) = report.as_mut() {
                        report.failed(&self.running, "health gate failed");
                    }
                } else {
                    self.running = running_from(&offered.available);
                    self.floor.raise(NAME, &offered.available.version);
                    self.state.record_installed(
                        NAME,
                        &offered.available.version,
                        offered.available.hash.clone(),
                        None,
                        None,
                    );
                    if let Some(report) = report.as_mut() {
                        report.installed(&self.running);
                    }
                }
            }
            _ => {}
        }
        if let Some(report) = report {
            self.reported = report.to_proto().packages.get(NAME).cloned();
        }
        decision
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the server sends, in any order and any number of times: what is reported as
    /// had is what runs, an installed offer is never installed again, and a failed offer is
    /// never retried unchanged.
    #[test]
    fn reports_always_match_what_runs(steps in proptest::collection::vec((0usize..4, 0u8..2, any::<bool>(), 0u8..3), 1..24)) {
        let release = Release::new();
        let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0"];
        let mut host = Host {
            running: running_from(&release.package("1.0.0", b"v1.0.0", 0)),
            state: InstalledState::default(),
            floor: RollbackFloor::default(),
            reported: None,
        };
        host.floor.raise(NAME, "1.0.0");
        for (version, variant, fails, all) in steps {
            let package = release.package(versions[version], format!("v{}", versions[version]).as_bytes(), variant);
            let before = host.running.clone();
            let failed_before = host.state.failed_offers.get(NAME).is_some_and(|f| f.offered_hash == package.hash);
            let decision = host.apply(&release, &offer(vec![(NAME, package.clone())], all), fails);
            if let CollectorDecision::Install { .. } = decision.collector {
                prop_assert!(!failed_before, "a failed offer was retried unchanged");
                prop_assert!(before.version != package.version || before.content_hash != running_from(&package).content_hash,
                    "what runs was installed again");
            }
            if let Some(status) = &host.reported {
                prop_assert_eq!(&status.agent_has_version, &host.running.version);
                prop_assert_eq!(&status.agent_has_hash, &host.running.has_hash());
                prop_assert!(status.status != v1::PackageStatusEnum::InstallPending as i32
                    || status.server_offered_hash != host.running.server_hash,
                    "pending for what runs");
            }
            prop_assert!(decision.others.is_empty());
        }
    }
}

/// Offers without package hashes (a server that sets none) are never taken for what runs or
/// for the install in progress, and no status is made up for them.
#[test]
fn offers_without_package_hashes_are_installed_not_matched() {
    let release = Release::new();
    let running = Running::new(NAME, "1.0.0", Vec::new(), None);
    let mut unhashed = release.package("1.1.0", b"new", 0);
    unhashed.hash.clear();
    let in_flight = InFlight::new(Vec::new(), InstallStep::Downloading);
    let decision = decide_with(
        &release,
        &offer(vec![(NAME, unhashed)], 1),
        &running,
        &InstalledState::default(),
        &RollbackFloor::default(),
        Some(&in_flight),
    );
    assert!(matches!(
        decision.collector,
        CollectorDecision::Install { .. }
    ));
    let report = StatusReport::for_decision(&decision, &running).expect("report");
    assert!(report.to_proto().packages.is_empty(), "{report:?}");
}
