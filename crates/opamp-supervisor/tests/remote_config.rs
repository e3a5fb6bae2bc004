//! Remote configs end to end: a real supervisor (in this process) and a real test collector
//! against an OpAMP server on 127.0.0.1. A good config is applied and reported (secrets
//! redacted, available components listed); a config the collector refuses is rolled back with the collector's own error
//! line; the host policy and the signature rules refuse configs without touching the collector.

mod agent_support;
mod collector_support;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use agent_support::{Fleet, Host, InProcess, WAIT};
use opamp_proto::InstanceUid;
use opamp_proto::v1::{self, RemoteConfigStatuses};
use opamp_supervisor::remote_config::digest_of;
use opamp_verify::{CONFIG_SIGNATURE_ENTRY, ConfigStatement, ReleaseSigner};

const REMOTE_ON_TOP: &str = "remote_config:\n  mode: remote_on_top\n";

async fn start(extra: &str) -> (Fleet, Host, InProcess, InstanceUid) {
    let mut fleet = Fleet::start().await;
    let host = Host::new("1.0.0");
    let (_, config) = host.config_extra(&fleet.endpoint(), "300ms", "5s", extra);
    let supervisor = InProcess::spawn(config);
    let uid = fleet.wait_connected().await;
    fleet
        .wait_until(uid, "healthy", |s| {
            s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    (fleet, host, supervisor, uid)
}

fn config_map(entries: &[(&str, &str)]) -> v1::AgentConfigMap {
    v1::AgentConfigMap {
        config_map: entries
            .iter()
            .map(|(name, body)| {
                (
                    (*name).to_owned(),
                    v1::AgentConfigFile {
                        body: body.as_bytes().to_vec(),
                        content_type: "text/yaml".to_owned(),
                    },
                )
            })
            .collect::<HashMap<_, _>>(),
    }
}

/// The config text the running collector serves, once it answers.
async fn running_config(host: &Host) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(text) = host.running_config().await {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "collector never served its config"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn error_message(status: &opamp_session::AgentStatus) -> String {
    status
        .remote_config_status
        .as_ref()
        .map(|s| s.error_message.clone())
        .unwrap_or_default()
}

fn collector_pid(host: &Host) -> String {
    std::fs::read_to_string(host.storage.join("collector.pid")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_config_is_applied_and_reported_with_secrets_redacted() {
    let (mut fleet, host, supervisor, uid) = start(REMOTE_ON_TOP).await;
    assert!(!running_config(&host).await.contains("otlphttp"));
    let offered = config_map(&[(
        "collector.yaml",
        "exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:4318\n    headers:\n      authorization: Bearer s3cret\n",
    )]);
    fleet.offer_config(uid, &[1; 32], offered);
    let status = fleet
        .wait_config(uid, &[1; 32], RemoteConfigStatuses::Applied)
        .await;

    let running = running_config(&host).await;
    assert!(
        running.contains("otlphttp"),
        "restarted with the new config: {running}"
    );
    assert!(
        running.contains("receivers"),
        "local base kept under the remote config"
    );
    assert!(
        running.contains("Bearer s3cret"),
        "the collector gets the real secret"
    );
    let effective = status
        .effective_config
        .and_then(|e| e.config_map)
        .and_then(|m| m.config_map.get("collector-config.yaml").cloned())
        .expect("effective config reported");
    let effective = String::from_utf8(effective.body).unwrap();
    assert!(effective.contains("otlphttp"), "{effective}");
    assert!(!effective.contains("s3cret"), "secret leaked: {effective}");
    assert!(effective.contains("<redacted>"), "{effective}");
    let components = status
        .available_components
        .expect("available components reported");
    assert!(
        components.components["receivers"]
            .sub_component_map
            .contains_key("otlp"),
        "{components:?}"
    );
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_the_collector_refuses_is_rolled_back_with_its_error_line() {
    let (mut fleet, host, supervisor, uid) = start(REMOTE_ON_TOP).await;
    let before = running_config(&host).await;
    let offered = config_map(&[(
        "collector.yaml",
        "fail_with: 'error decoding exporters: unknown type: \"bogus\"'\n",
    )]);
    fleet.offer_config(uid, &[2; 32], offered);
    let status = fleet
        .wait_config(uid, &[2; 32], RemoteConfigStatuses::Failed)
        .await;
    let message = error_message(&status);
    assert!(
        message.contains("error decoding exporters: unknown type: \"bogus\""),
        "the collector's own line: {message}"
    );
    assert_eq!(
        running_config(&host).await,
        before,
        "the last good config is back"
    );
    fleet
        .wait_until(uid, "healthy on the old config", |s| {
            s.health.as_ref().is_some_and(|h| h.healthy)
        })
        .await;
    let live = std::fs::read_to_string(host.storage.join("collector-config.yaml")).unwrap();
    assert!(!live.contains("fail_with"), "{live}");

    // A good config, then a bad one, then the server goes back to the good one: it is what
    // runs, so it is reported applied without another restart.
    let good = config_map(&[("collector.yaml", "processors:\n  batch: {}\n")]);
    fleet.offer_config(uid, &[5; 32], good.clone());
    fleet
        .wait_config(uid, &[5; 32], RemoteConfigStatuses::Applied)
        .await;
    let bad = config_map(&[("collector.yaml", "fail_with: broken\n")]);
    fleet.offer_config(uid, &[6; 32], bad);
    fleet
        .wait_config(uid, &[6; 32], RemoteConfigStatuses::Failed)
        .await;
    let pid = collector_pid(&host);
    fleet.offer_config(uid, &[5; 32], good);
    fleet
        .wait_config(uid, &[5; 32], RemoteConfigStatuses::Applied)
        .await;
    assert_eq!(
        collector_pid(&host),
        pid,
        "no restart for the config that runs"
    );
    assert!(running_config(&host).await.contains("batch"));
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_policy_refuses_without_touching_the_collector() {
    let policy = "remote_config:\n  mode: remote_on_top\n  deny_components: [exporters/file]\n  allowed_endpoints: [\"http://127.0.0.1:4318\"]\n";
    let (mut fleet, host, supervisor, uid) = start(policy).await;
    let pid = collector_pid(&host);
    let file = config_map(&[(
        "c.yaml",
        "exporters:\n  file/all:\n    path: /tmp/everything\n",
    )]);
    fleet.offer_config(uid, &[3; 32], file);
    let status = fleet
        .wait_config(uid, &[3; 32], RemoteConfigStatuses::Failed)
        .await;
    assert!(
        error_message(&status).contains("exporters/file/all is denied"),
        "{}",
        error_message(&status)
    );

    let elsewhere = config_map(&[(
        "c.yaml",
        "exporters:\n  otlphttp:\n    endpoint: https://attacker.example:4318\n",
    )]);
    fleet.offer_config(uid, &[4; 32], elsewhere);
    let status = fleet
        .wait_config(uid, &[4; 32], RemoteConfigStatuses::Failed)
        .await;
    assert!(
        error_message(&status).contains("allowed_endpoints"),
        "{}",
        error_message(&status)
    );
    assert_eq!(collector_pid(&host), pid, "the collector was not restarted");
    supervisor.shutdown().await;
}

fn signed(
    signer: &ReleaseSigner,
    mut map: v1::AgentConfigMap,
    selector: (&str, &str),
) -> v1::AgentConfigMap {
    let statement = ConfigStatement::new(
        digest_of(&map),
        SystemTime::now() + Duration::from_secs(3600),
    )
    .with_selector(selector.0, selector.1)
    .expect("valid selector");
    map.config_map.insert(
        CONFIG_SIGNATURE_ENTRY.to_owned(),
        v1::AgentConfigFile {
            body: signer.sign_config(&statement).expect("sign"),
            content_type: "application/octet-stream".to_owned(),
        },
    );
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_signatures_refuse_unsigned_tampered_mistargeted_and_foreign_configs() {
    let extra = "remote_config:\n  mode: remote_on_top\n  require_signed: true\n";
    let (mut fleet, host, supervisor, uid) = start(extra).await;
    let pid = collector_pid(&host);
    let body = "exporters:\n  otlphttp:\n    endpoint: http://127.0.0.1:4318\n";

    let cases: Vec<(u8, v1::AgentConfigMap, &str)> = vec![
        (10, config_map(&[("c.yaml", body)]), "not signed"),
        (
            11,
            {
                let mut map = signed(
                    &host.signer,
                    config_map(&[("c.yaml", body)]),
                    ("env", "test"),
                );
                map.config_map.get_mut("c.yaml").unwrap().body =
                    b"exporters:\n  otlphttp:\n    endpoint: https://attacker.example\n".to_vec();
                map
            },
            "digest mismatch",
        ),
        (
            12,
            signed(
                &host.signer,
                config_map(&[("c.yaml", body)]),
                ("env", "prod"),
            ),
            "env=prod",
        ),
        (
            13,
            signed(
                &ReleaseSigner::generate_ed25519().unwrap(),
                config_map(&[("c.yaml", body)]),
                ("env", "test"),
            ),
            "not trusted",
        ),
    ];
    for (n, map, expected) in cases {
        fleet.offer_config(uid, &[n; 32], map);
        let status = fleet
            .wait_config(uid, &[n; 32], RemoteConfigStatuses::Failed)
            .await;
        let message = error_message(&status);
        assert!(message.contains(expected), "case {n}: {message}");
    }
    assert_eq!(collector_pid(&host), pid, "nothing was applied");

    let good = signed(
        &host.signer,
        config_map(&[("c.yaml", body)]),
        ("env", "test"),
    );
    fleet.offer_config(uid, &[14; 32], good);
    fleet
        .wait_config(uid, &[14; 32], RemoteConfigStatuses::Applied)
        .await;
    assert!(running_config(&host).await.contains("otlphttp"));
    supervisor.shutdown().await;
}
