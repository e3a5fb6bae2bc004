//! A real supervisor process killed with SIGKILL at each install step, then recovered.
//!
//! The "supervisor" is this test binary re-run as a child (`supervisor_child_entry`), in its own
//! process group with its collector. It runs a real install against a real HTTP server, prints
//! `STEP <step>` after each step is entered (journaled when recovery needs it), and blocks at the target step until the parent
//! kills the whole process group (supervisor and collector, as a service manager would). The
//! parent then recovers with a fresh collector and checks which binary runs.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use install_support::{FileServer, Host, PACKAGE, ScriptCollector, healthy_script};
use opamp_supervisor::install::{Collector, InstallConfig, InstallEvent, Installer, Recovery};
use opamp_supervisor::journal::{InstallStep, Journal};
use opamp_supervisor::storage::StorageLayout;
use opamp_verify::{KeyRing, PublicKey, TrustPolicy, TrustedKey};
use serde_json::json;

const SCENARIO_ENV: &str = "OPAMP_KILL_TEST_SCENARIO";

/// Runs only when re-executed by `killed_for_real_at_each_install_step`.
#[tokio::test]
async fn supervisor_child_entry() {
    let Ok(path) = std::env::var(SCENARIO_ENV) else {
        return;
    };
    let scenario: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let text = |key: &str| scenario[key].as_str().unwrap().to_owned();
    let bytes = |key: &str| hex::decode(text(key)).unwrap();
    let target = text("target");

    let exe = std::path::PathBuf::from(text("exe"));
    let layout = StorageLayout::create(text("storage")).unwrap();
    let mut config = InstallConfig::new(&exe);
    config.health_timeout = Duration::from_secs(5);
    let installer = Installer::new(layout, config).unwrap();
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(
        PublicKey::from_spki_pem(&text("public_key")).unwrap(),
    ));
    let policy = TrustPolicy::new(keys);
    let offer = opamp_proto::v1::PackageAvailable {
        r#type: opamp_proto::v1::PackageType::TopLevel as i32,
        version: text("version"),
        file: Some(opamp_proto::v1::DownloadableFile {
            download_url: text("url"),
            content_hash: bytes("content_hash"),
            signature: bytes("signature"),
            headers: None,
        }),
        hash: bytes("hash"),
    };

    let mut collector = ScriptCollector::new();
    collector.start(&exe).await.unwrap();
    assert!(
        collector
            .wait_healthy(tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .is_healthy()
    );
    let mut on_event = |event: InstallEvent| {
        if let InstallEvent::Step(step) = event {
            let name = format!("{step:?}");
            let mut out = std::io::stdout().lock();
            writeln!(out, "STEP {name}").unwrap();
            out.flush().unwrap();
            if name == target {
                // Hold here, after the journal write, until the parent kills us.
                let _ = std::io::stdin().read(&mut [0u8; 1]);
                std::process::exit(99);
            }
        }
    };
    let result = installer
        .install_offer(
            &mut collector,
            PACKAGE,
            &offer,
            &policy,
            std::time::SystemTime::now(),
            &mut on_event,
        )
        .await;
    println!("DONE {:?}", result.map(|i| i.version));
}

/// Starts the child supervisor for `target`, waits until it reports that step, and kills its
/// process group.
fn run_and_kill(scenario: &std::path::Path, target: InstallStep) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "supervisor_child_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_ENV, scenario)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(scenario.with_extension("stderr")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Bound the test: if the child hangs, kill it so the read below ends and the test fails.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let guard = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watchdog.recv_timeout(Duration::from_secs(60))
        {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let wanted = format!("STEP {target:?}");
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        // The harness may have printed "test name ... " without a newline before ours.
        let Some(at) = line.find("STEP ") else {
            continue;
        };
        let line = line[at..].to_owned();
        seen.push(line.clone());
        if line == wanted {
            break;
        }
    }
    let _ = done.send(());
    guard.join().unwrap();
    let stderr = std::fs::read_to_string(scenario.with_extension("stderr")).unwrap_or_default();
    assert_eq!(
        seen.last(),
        Some(&wanted),
        "child never reached {target:?}: {seen:?}\n{stderr}"
    );
    nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

// Multi-threaded: the file server must keep serving while a blocking thread waits for the child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_for_real_at_each_install_step() {
    use InstallStep::*;
    // (where the kill lands, the step the journal then holds, whether the new version runs)
    // Steps that recover like the one before them are not journaled (InstallStep::needs_journaling).
    for (target, journaled, expect_new) in [
        (Downloading, Downloading, false),
        (Verifying, Downloading, false),
        (Staged, Staged, false),
        (Stopping, Staged, false),
        (Swapping, Swapping, false),
        (Starting, Swapping, true),
        (HealthGate, Swapping, true),
    ] {
        let old = healthy_script("1.0.0");
        let new = healthy_script("2.0.0");
        let mut host = Host::new(&old, "1.0.0").await;
        host.collector.stop().await.unwrap();
        host.collector = ScriptCollector::new();
        let server = FileServer::start(new.clone()).await;
        let offer = host.offer(&server.url(), "2.0.0", &new);
        let file = offer.file.as_ref().unwrap();
        let scenario = host.dir.path().join("scenario.json");
        std::fs::write(
            &scenario,
            serde_json::to_vec(&json!({
                "target": format!("{target:?}"),
                "exe": host.exe,
                "storage": host.layout.root(),
                "public_key": host.signer.public_key().to_spki_pem().unwrap(),
                "url": server.url(),
                "version": "2.0.0",
                "content_hash": hex::encode(&file.content_hash),
                "signature": hex::encode(&file.signature),
                "hash": hex::encode(&offer.hash),
            }))
            .unwrap(),
        )
        .unwrap();

        tokio::task::spawn_blocking(move || run_and_kill(&scenario, target))
            .await
            .unwrap();
        assert_eq!(
            Journal::new(host.layout.journal_path())
                .load()
                .unwrap()
                .unwrap()
                .step,
            journaled,
            "killed at {target:?}"
        );

        // Restart: recover, then start the collector if recovery did not.
        let recovery = host
            .installer
            .recover(&mut host.collector, &mut |_| {})
            .await
            .unwrap();
        if !recovery.collector_started() {
            host.collector.start(&host.exe).await.unwrap();
            let outcome = host
                .collector
                .wait_healthy(tokio::time::Instant::now() + Duration::from_secs(5))
                .await;
            assert!(outcome.is_healthy(), "{target:?}: {outcome}");
        }
        let (expected_version, expected_bytes) = if expect_new {
            assert_eq!(
                recovery,
                Recovery::Completed {
                    version: "2.0.0".into()
                },
                "{target:?}"
            );
            ("2.0.0", &new)
        } else {
            assert_eq!(
                recovery,
                Recovery::Abandoned { step: journaled },
                "{target:?}"
            );
            ("1.0.0", &old)
        };
        assert_eq!(&host.exe_content(), expected_bytes, "{target:?}");
        assert_eq!(
            host.collector.healthy_version.as_deref(),
            Some(expected_version),
            "{target:?}"
        );
        assert!(!host.next_path().exists(), "{target:?}");
        println!("killed at {target:?}: recovered to {expected_version} ({recovery:?})");
    }
}
