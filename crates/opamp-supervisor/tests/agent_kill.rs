//! A real supervisor process is SIGKILLed while a new build is in its health gate, then started
//! again: it keeps its instance uid, finishes the journaled install, and reports what really
//! runs.
//!
//! The crate ships no binary (`opamp supervisor` is the one command), so the supervisor process
//! is this test executable started again: `supervisor_process` below runs the library's `run`
//! when the environment names a config.

mod agent_support;
mod collector_support;

use std::time::Duration;

use agent_support::{Fleet, Host, WAIT, assert_still_runs, package, package_is, spawn_supervisor};
use collector_support::Behaviour;
use opamp_proto::v1::PackageStatusEnum;
use opamp_verify::DowngradeAuthorisation;

/// Does nothing in a normal test run; the supervisor in a process `spawn_supervisor` started.
#[test]
fn supervisor_process() {
    agent_support::run_supervisor_process_if_asked();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_killed_during_the_health_gate_recovers_and_reports_the_truth() {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    // A long liveness window keeps the new build in its health gate while we kill.
    let (config_path, _) = host.config(&fleet.endpoint(), "4s");
    let mut first = spawn_supervisor(&host, &config_path, "first.log");
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
        .wait_until(uid, "Installing 1.1.0", |s| {
            package(s).is_some_and(|p| p.status == PackageStatusEnum::Installing as i32)
        })
        .await;
    // The new build answers: the swap happened and its health gate is running.
    let deadline = tokio::time::Instant::now() + WAIT;
    while host.running_version().await.as_deref() != Some("1.1.0") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new build never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = spawn_supervisor(&host, &config_path, "second.log");
    let again = fleet.wait_connected().await;
    assert_eq!(again, uid, "the instance uid survives a restart");
    fleet
        .wait_until(uid, "Installed 1.1.0 after recovery", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.1.0"
            })
        })
        .await;
    assert_still_runs(&mut fleet, uid, &host, "1.1.0").await;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(second.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || second.wait().unwrap()),
    )
    .await
    .expect("supervisor exits in time after SIGTERM")
    .unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
    assert!(host.running_version().await.is_none(), "collector stopped");
}
