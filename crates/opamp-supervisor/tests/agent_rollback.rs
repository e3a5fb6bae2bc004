//! New builds that fail after the swap (crash at start, crash 2 s later, unhealthy) are rolled
//! back automatically: `InstallFailed` names what failed, the old collector is healthy again,
//! and the same offer is not tried again.

mod agent_support;
mod collector_support;

use agent_support::{assert_still_runs, package, running, wait_failed};
use collector_support::Behaviour;
use opamp_proto::v1::PackageStatusEnum;
use opamp_verify::DowngradeAuthorisation;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_that_crashes_at_start_is_rolled_back_and_not_retried() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "500ms").await;
    let broken = host.build(
        "1.1.0",
        Behaviour {
            crash_on_start: true,
            ..Behaviour::default()
        },
    );
    let offer = fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &broken,
        DowngradeAuthorisation::Forbidden,
    );
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("health gate"), "error: {error}");
    assert!(error.contains("exited"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;

    // The same package again (a new aggregate hash makes the server send it): the agent
    // must answer from its record. The file is gone, so a retry would fail differently.
    for entry in std::fs::read_dir(fleet.packages.path()).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let started_before = fleet.status(uid).health.unwrap().start_time_unix_nano;
    let mut again = offer.clone();
    again.all_packages_hash = vec![0x5a; 32];
    fleet.offer(uid, again);
    let status = fleet
        .wait_until(uid, "InstallFailed for the re-sent offer", |s| {
            // The hash and `InstallPending` are set together, so an `InstallFailed` with
            // this hash is the answer to the re-sent offer.
            s.package_statuses
                .as_ref()
                .is_some_and(|p| p.server_provided_all_packages_hash == vec![0x5a; 32])
                && package(s).is_some_and(|p| p.status == PackageStatusEnum::InstallFailed as i32)
        })
        .await;
    let reported = package(&status).unwrap();
    assert_eq!(reported.status, PackageStatusEnum::InstallFailed as i32);
    assert_eq!(reported.error_message, error, "answered from the record");
    // A retry would have swapped, crashed and restarted the old collector (a new process
    // reported by health long before the rollback's own health gate ends).
    assert_eq!(
        status.health.unwrap().start_time_unix_nano,
        started_before,
        "the old collector was not restarted: the offer was not retried"
    );
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_that_crashes_after_two_seconds_is_rolled_back() {
    // The liveness window (3 s) outlasts the crash (2 s), as it should in production.
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "3s").await;
    let broken = host.build(
        "1.1.0",
        Behaviour {
            crash_after_ms: Some(2000),
            ..Behaviour::default()
        },
    );
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &broken,
        DowngradeAuthorisation::Forbidden,
    );
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("exited"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_that_stays_unhealthy_is_rolled_back() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "500ms").await;
    let broken = host.build(
        "1.1.0",
        Behaviour {
            unhealthy_after_ms: Some(0),
            ..Behaviour::default()
        },
    );
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &broken,
        DowngradeAuthorisation::Forbidden,
    );
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("unhealthy"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}
