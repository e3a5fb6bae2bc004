//! End to end through `opamp_supervisor::run`: a real OpAMP server on 127.0.0.1 offers
//! signed builds of the real test collector; the supervisor downloads, verifies, swaps,
//! health-gates and reports. Upgrades and downgrades.

mod agent_support;
mod collector_support;

use agent_support::{Fleet, Host, InProcess, described_version, package, package_is};
use collector_support::Behaviour;
use opamp_packages::{OfferedPackage, PackageName, PackageOffer};
use opamp_proto::v1::PackageStatusEnum;
use opamp_verify::DowngradeAuthorisation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_installed_and_reported_with_new_health_and_version() {
    let started = std::time::Instant::now();
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    let (_, config) = host.config(&fleet.endpoint(), "500ms");
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;

    let status = fleet
        .wait_until(uid, "initial Installed 1.0.0 and healthy", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.0.0")
                && s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    assert_eq!(described_version(&status).as_deref(), Some("1.0.0"));
    let description = status.description.unwrap();
    assert!(
        description
            .non_identifying_attributes
            .iter()
            .any(|kv| kv.key == "env"),
        "agent.labels are reported: {description:?}"
    );
    let effective = status
        .effective_config
        .unwrap()
        .config_map
        .unwrap()
        .config_map;
    let reported = &effective[&host.collector_config().display().to_string()];
    assert_eq!(reported.body, b"receivers: {}\n");

    eprintln!("initial status after {:?}", started.elapsed());
    let new = host.build("1.1.0", Behaviour::default());
    let offer = fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let status = fleet
        .wait_until(uid, "Installed 1.1.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.1.0"
            })
        })
        .await;
    eprintln!("installed after {:?}", started.elapsed());
    let reported = package(&status).unwrap();
    assert_eq!(reported.agent_has_hash, offer.packages["otelcol"].hash);
    assert_eq!(
        status
            .package_statuses
            .as_ref()
            .unwrap()
            .server_provided_all_packages_hash,
        offer.all_packages_hash
    );
    let status = fleet
        .wait_until(uid, "description 1.1.0 and healthy", |s| {
            described_version(s).as_deref() == Some("1.1.0")
                && s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    assert!(status.health.unwrap().healthy);
    assert_eq!(host.live_version(), "1.1.0");
    assert_eq!(host.running_version().await.as_deref(), Some("1.1.0"));

    eprintln!("checked after {:?}", started.elapsed());
    supervisor.shutdown().await;
    eprintln!("shut down after {:?}", started.elapsed());
    assert!(
        host.running_version().await.is_none(),
        "collector stopped with the supervisor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_command_restarts_the_collector() {
    let (mut fleet, host, supervisor, uid) = agent_support::running("1.0.0", "300ms").await;
    let started = |s: &opamp_session::AgentStatus| {
        s.health
            .as_ref()
            .filter(|h| h.healthy)
            .map(|h| h.start_time_unix_nano)
    };
    let before = started(&fleet.status(uid)).expect("healthy with a start time");
    fleet
        .server
        .sessions()
        .with_session(uid, |s| {
            s.send_command(opamp_proto::v1::ServerToAgentCommand {
                r#type: opamp_proto::v1::CommandType::Restart as i32,
            });
        })
        .unwrap();
    fleet
        .wait_until(uid, "healthy again with a later start time", |s| {
            started(s).is_some_and(|t| t > before)
        })
        .await;
    assert_eq!(host.running_version().await.as_deref(), Some("1.0.0"));
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_offer_during_an_install_is_installed_after_it() {
    // A 2 s liveness window keeps the first install busy while the second offer arrives.
    let (mut fleet, host, supervisor, uid) = agent_support::running("1.0.0", "2s").await;
    let first = host.build("1.1.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &first,
        DowngradeAuthorisation::Forbidden,
    );
    fleet
        .wait_until(uid, "Installing 1.1.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installing as i32
                    && p.server_offered_version == "1.1.0"
            })
        })
        .await;
    let second = host.build("1.2.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.2.0",
        &second,
        DowngradeAuthorisation::Forbidden,
    );
    fleet
        .wait_until(uid, "Installed 1.2.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.2.0"
            })
        })
        .await;
    agent_support::assert_still_runs(&mut fleet, uid, &host, "1.2.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_over_http_polling() {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    let endpoint = format!("http://{}/v1/opamp", fleet.server.local_addr());
    let (_, config) = host.config_with(&endpoint, "300ms", "1s");
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "initial Installed 1.0.0", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.0.0")
        })
        .await;
    let new = host.build("1.1.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    fleet
        .wait_until(uid, "Installed 1.1.0 over HTTP", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.1.0"
            })
        })
        .await;
    agent_support::assert_still_runs(&mut fleet, uid, &host, "1.1.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installed_is_reported_with_fresh_health_not_the_health_seen_during_the_swap() {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    let (_, mut config) = host.config(&fleet.endpoint(), "500ms");
    // With a long interval the monitor's last reading after the swap is the one taken while
    // the new collector was still starting; only the refresh after the gate replaces it.
    config.health.check_interval = std::time::Duration::from_secs(120);
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "initial Installed 1.0.0", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.0.0")
        })
        .await;

    let new = host.build("1.1.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let status = fleet
        .wait_until(uid, "Installed 1.1.0", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.1.0")
        })
        .await;
    let health = status.health.expect("health is reported");
    assert!(
        health.healthy,
        "Installed must not arrive beside stale unhealthy health: {health:?}"
    );
    supervisor.shutdown().await;
}

/// The spec's package statuses cover every package offered: an add-on this supervisor does not
/// install is reported `InstallFailed` with the reason, while the collector upgrades.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_packages_are_reported_not_installed_while_the_collector_upgrades() {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    let (_, config) = host.config(&fleet.endpoint(), "300ms");
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "initial Installed 1.0.0", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.0.0")
        })
        .await;

    let new = host.build("1.1.0", Behaviour::default());
    let collector = fleet.signed_package(
        &host.signer,
        "1.1.0",
        &new,
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let addon = OfferedPackage::addon(
        PackageName::new("geoip-db").unwrap(),
        "2026.11",
        fleet.publish("geoip-db", b"database"),
        opamp_packages::ContentHash::from([7u8; 32]),
    );
    let mut offer = PackageOffer::new()
        .with_package(collector)
        .unwrap()
        .with_package(addon)
        .unwrap();
    // Far more packages than the supervisor reports on: its report stays bounded.
    for index in 0..100 {
        let name = PackageName::new(format!("zz-plugin-{index:03}")).unwrap();
        let url = fleet.publish(name.as_str(), b"plugin");
        let hash = opamp_packages::ContentHash::from([index; 32]);
        offer = offer
            .with_package(OfferedPackage::addon(name, "1.0.0", url, hash))
            .unwrap();
    }
    let offer = offer.build();
    fleet.offer(uid, offer.clone());
    let status = fleet
        .wait_until(uid, "Installed 1.1.0 and the add-on refused", |s| {
            package_is(s, PackageStatusEnum::Installed, "1.1.0")
                && s.package_statuses
                    .as_ref()
                    .is_some_and(|all| all.packages.contains_key("geoip-db"))
        })
        .await;
    let all = status.package_statuses.unwrap();
    assert_eq!(
        all.server_provided_all_packages_hash,
        offer.all_packages_hash
    );
    let addon = &all.packages["geoip-db"];
    assert_eq!(addon.status, PackageStatusEnum::InstallFailed as i32);
    assert_eq!(addon.server_offered_version, "2026.11");
    assert_eq!(addon.server_offered_hash, offer.packages["geoip-db"].hash);
    assert!(addon.agent_has_version.is_empty());
    assert!(
        addon
            .error_message
            .contains("add-on packages are not supported")
            && addon.error_message.contains("otelcol"),
        "{}",
        addon.error_message
    );
    let refused = all
        .packages
        .values()
        .filter(|p| p.status == PackageStatusEnum::InstallFailed as i32)
        .count();
    assert_eq!(refused, 64, "at most 64 refused packages are reported");
    assert_eq!(all.packages.len(), 65, "plus the collector");
    assert_eq!(host.live_version(), "1.1.0");
    supervisor.shutdown().await;
}
