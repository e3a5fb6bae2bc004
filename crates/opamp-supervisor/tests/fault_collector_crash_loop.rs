//! A collector killed from outside over and over (as an OOM killer would), under the real
//! supervisor agent loop talking to a real OpAMP server on 127.0.0.1. The server must hear the
//! truth each time: unhealthy after the crash, healthy again on the same version after the
//! supervisor restarted it; and once the crashes exceed the restart budget (5 restarts before
//! a collector has run for 60 s), the supervisor stops restarting and the server sees it
//! unhealthy, with nothing installed or changed on the way.
//!
//! A new version that crash-loops during an install is a different fault, covered by
//! `agent_rollback.rs` (rolled back and reported `InstallFailed`) and `install_flow.rs`.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod agent_support;
mod collector_support;

use std::path::Path;
use std::time::Duration;

use agent_support::{WAIT, package_is, running};
use collector_support::process_running;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opamp_proto::v1::PackageStatusEnum;

/// The collector pid the supervisor recorded, once it differs from `previous` and runs.
async fn next_collector_pid(storage: &Path, previous: Option<u32>) -> u32 {
    let path = storage.join("collector.pid");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pid = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|p| Some(*p) != previous && process_running(*p)) {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new collector after {previous:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGKILL).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_repeatedly_is_restarted_and_reported_then_given_up_on() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let first_start = fleet.status(uid).health.unwrap().start_time_unix_nano;

    // Three crashes, each after the collector became healthy again: each is recovered.
    let mut pid = next_collector_pid(&host.storage, None).await;
    let mut start = first_start;
    for round in 0..3 {
        sigkill(pid);
        fleet
            .wait_until(uid, &format!("unhealthy after crash {round}"), |s| {
                s.health.as_ref().is_some_and(|h| !h.healthy)
            })
            .await;
        let status = fleet
            .wait_until(uid, &format!("healthy again after crash {round}"), |s| {
                s.health
                    .as_ref()
                    .is_some_and(|h| h.healthy && h.start_time_unix_nano != start)
            })
            .await;
        start = status.health.as_ref().unwrap().start_time_unix_nano;
        assert!(package_is(&status, PackageStatusEnum::Installed, "1.0.0"));
        pid = next_collector_pid(&host.storage, Some(pid)).await;
        assert_eq!(host.running_version().await.as_deref(), Some("1.0.0"));
    }

    // Now kill every new process at once until the restart budget runs out. The budget counts
    // crashes until a collector has run for `reset_after` (60 s by default), healthy or not, so
    // the three crashes above count: the default 5 restarts allow 2 more, the 6th crash ends it.
    let mut kills = 0;
    loop {
        sigkill(pid);
        kills += 1;
        let path = host.storage.join("collector.pid");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut next = None;
        while tokio::time::Instant::now() < deadline {
            let candidate = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.split_whitespace().next()?.parse::<u32>().ok());
            if let Some(candidate) = candidate.filter(|p| *p != pid && process_running(*p)) {
                next = Some(candidate);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match next {
            Some(candidate) => pid = candidate,
            // No restart within 5 s while the back-off is capped at 1 s: it gave up.
            None => break,
        }
        assert!(kills < 20, "the supervisor never gave up restarting");
    }
    let status = fleet
        .wait_until(uid, "unhealthy once restarts are exhausted", |s| {
            s.health.as_ref().is_some_and(|h| !h.healthy)
        })
        .await;
    assert_eq!(3 + kills, 6, "gave up after {kills} more kills");
    // Nothing was installed or changed by the crash loop.
    assert!(package_is(&status, PackageStatusEnum::Installed, "1.0.0"));
    assert_eq!(host.live_version(), "1.0.0");
    eprintln!(
        "gave up after {kills} fast kills; last health: {:?}",
        status.health.map(|h| (h.healthy, h.status, h.last_error))
    );
    supervisor.shutdown().await;
}
