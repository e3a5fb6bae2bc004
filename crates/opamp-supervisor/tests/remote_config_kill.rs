//! A real supervisor process is SIGKILLed while a remote config is in its health gate: the
//! config file on disk is then the old or the new one, whole; the next supervisor puts the
//! last good config back, reports it, and applies the new config when the server offers it
//! again.

mod agent_support;
mod collector_support;

use std::collections::HashMap;
use std::time::Duration;

use agent_support::{Fleet, Host, WAIT, spawn_supervisor};
use opamp_proto::v1::{self, RemoteConfigStatuses};

/// Does nothing in a normal test run; the supervisor in a process `spawn_supervisor` started.
#[test]
fn supervisor_process() {
    agent_support::run_supervisor_process_if_asked();
}

const NEW_CONFIG: &str = "exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:4318\n";

fn offer(fleet: &Fleet, uid: opamp_proto::InstanceUid) {
    let map = v1::AgentConfigMap {
        config_map: HashMap::from([(
            "c.yaml".to_owned(),
            v1::AgentConfigFile {
                body: NEW_CONFIG.as_bytes().to_vec(),
                content_type: "text/yaml".to_owned(),
            },
        )]),
    };
    fleet.offer_config(uid, &[7; 32], map);
}

fn yaml(text: &str) -> serde_norway::Value {
    serde_norway::from_str(text).expect("whole YAML")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_killed_mid_apply_leaves_a_whole_config_and_recovers() {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    // A long liveness window keeps the new config in its health gate while we kill.
    let (config_path, _) = host.config_extra(
        &fleet.endpoint(),
        "4s",
        "5s",
        "remote_config:\n  mode: remote_on_top\n",
    );
    let live_path = host.storage.join("collector-config.yaml");
    let mut first = spawn_supervisor(&host, &config_path, "first.log");
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "healthy", |s| {
            s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    let old = std::fs::read_to_string(&live_path).expect("live config written at start");

    offer(&fleet, uid);
    fleet
        .wait_config(uid, &[7; 32], RemoteConfigStatuses::Applying)
        .await;
    // The new config runs: the collector was restarted with it and its gate is running.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !host
        .running_config()
        .await
        .is_some_and(|c| c.contains("otlphttp"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "new config never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    let journal = std::fs::read_to_string(host.storage.join("remote-config.json")).unwrap();
    assert!(
        journal.contains(&format!("\"applying\": \"{}\"", hex(&[7; 32]))),
        "killed mid-apply: {journal}"
    );
    let on_disk = yaml(&std::fs::read_to_string(&live_path).unwrap());
    let mut new = yaml(&old);
    opamp_supervisor::remote_config::compose::merge(&mut new, yaml(NEW_CONFIG));
    assert!(
        on_disk == yaml(&old) || on_disk == new,
        "the live config is the old or the new one, whole: {on_disk:?}"
    );

    let mut second = spawn_supervisor(&host, &config_path, "second.log");
    let again = fleet.wait_connected().await;
    assert_eq!(again, uid);
    // Recovery put the good copy back before the collector started, and says that no remote
    // config runs (the interrupted one is not reported as applied).
    fleet
        .wait_config(uid, &[], RemoteConfigStatuses::Unset)
        .await;
    assert_eq!(
        yaml(&std::fs::read_to_string(&live_path).unwrap()),
        yaml(&old)
    );
    offer(&fleet, uid);
    fleet
        .wait_config(uid, &[7; 32], RemoteConfigStatuses::Applied)
        .await;
    assert_eq!(yaml(&std::fs::read_to_string(&live_path).unwrap()), new);
    assert!(
        host.running_config()
            .await
            .is_some_and(|c| c.contains("otlphttp"))
    );
    let journal = std::fs::read_to_string(host.storage.join("remote-config.json")).unwrap();
    assert!(journal.contains("\"applying\": null"), "{journal}");

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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
