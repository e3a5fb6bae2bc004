//! Recovery after the supervisor was killed at each journaled step. A kill is simulated by
//! leaving the files exactly as the install had them at that step, writing the journal record
//! for that step, and calling `recover` with a fresh collector (the old child died with the
//! supervisor).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use install_support::{
    Host, PACKAGE, ScriptCollector, crash_at_start_script, healthy_script, write_executable,
};
use opamp_packages::ContentHash;
use opamp_supervisor::install::{Collector, InstallError, Recovery};
use opamp_supervisor::journal::{InstallRecord, InstallStep, Journal};

struct Crash {
    host: Host,
    old: Vec<u8>,
    new: Vec<u8>,
    record: InstallRecord,
}

/// A host at `step` of installing `new` (2.0.0) over a healthy 1.0.0, with the files as the
/// installer leaves them at that step. `swapped` says whether the rename already happened.
async fn crash_at(step: InstallStep, new: Vec<u8>, swapped: bool) -> Crash {
    let old = healthy_script("1.0.0");
    let mut host = Host::new(&old, "1.0.0").await;
    host.collector.stop().await.unwrap(); // killed with the supervisor
    host.collector = ScriptCollector::new();

    let mut record = InstallRecord::new(PACKAGE, "2.0.0", b"offer-2".to_vec(), host.exe.clone());
    record.previous_version = Some("1.0.0".into());
    record.step = step;
    let after_staging = !matches!(step, InstallStep::Downloading | InstallStep::Verifying);
    if after_staging {
        write_executable(&host.next_path(), &new);
        record.staged_path = Some(host.next_path());
        record.staged_sha256 = Some(ContentHash::from_bytes(install_support::sha256(&new)));
        record.content_hash = record.staged_sha256;
        record.previous_sha256 = Some(ContentHash::from_bytes(install_support::sha256(&old)));
    }
    if swapped {
        std::fs::hard_link(&host.exe, host.previous_path()).unwrap();
        std::fs::rename(host.next_path(), &host.exe).unwrap();
    }
    Journal::new(host.layout.journal_path())
        .write(&record)
        .unwrap();
    Crash {
        host,
        old,
        new,
        record,
    }
}

async fn recover(host: &mut Host) -> Result<Recovery, InstallError> {
    host.installer
        .recover(&mut host.collector, &mut |_| {})
        .await
}

fn journal_step(host: &Host) -> InstallStep {
    Journal::new(host.layout.journal_path())
        .load()
        .unwrap()
        .unwrap()
        .step
}

#[tokio::test]
async fn killed_before_the_swap_keeps_the_old_binary() {
    for step in [
        InstallStep::Downloading,
        InstallStep::Verifying,
        InstallStep::Staged,
        InstallStep::Stopping,
    ] {
        let Crash { mut host, old, .. } = crash_at(step, healthy_script("2.0.0"), false).await;
        // A copy interrupted by the kill leaves its temp file.
        let leftover = host.exe.with_file_name(".otelcol.next.tmp");
        std::fs::write(&leftover, b"half a bin").unwrap();
        let recovery = recover(&mut host).await.unwrap();
        assert!(!leftover.exists());
        assert_eq!(recovery, Recovery::Abandoned { step });
        assert!(!recovery.collector_started());
        assert_eq!(host.exe_content(), old, "{step:?}");
        assert!(
            !host.next_path().exists(),
            "{step:?}: staged file left behind"
        );
        assert!(host.collector.started.is_empty());
        assert_eq!(journal_step(&host), InstallStep::Idle);
        // The same offer is tried again later.
        let state = host.state();
        assert!(
            !state.failed_offers.contains_key(PACKAGE)
                && state.packages[PACKAGE].server_hash != b"offer-2",
            "{step:?}: neither installed nor failed"
        );
    }
}

#[tokio::test]
async fn killed_during_swapping_before_the_rename_keeps_the_old_binary() {
    let Crash { mut host, old, .. } =
        crash_at(InstallStep::Swapping, healthy_script("2.0.0"), false).await;
    let recovery = recover(&mut host).await.unwrap();
    assert_eq!(
        recovery,
        Recovery::Abandoned {
            step: InstallStep::Swapping
        }
    );
    assert_eq!(host.exe_content(), old);
}

#[tokio::test]
async fn killed_after_the_swap_finishes_the_install() {
    for step in [
        InstallStep::Swapping,
        InstallStep::Starting,
        InstallStep::HealthGate,
    ] {
        let Crash { mut host, new, .. } = crash_at(step, healthy_script("2.0.0"), true).await;
        let recovery = recover(&mut host).await.unwrap();
        assert_eq!(
            recovery,
            Recovery::Completed {
                version: "2.0.0".into()
            },
            "{step:?}"
        );
        assert_eq!(host.exe_content(), new);
        assert_eq!(host.collector.healthy_version.as_deref(), Some("2.0.0"));
        assert_eq!(journal_step(&host), InstallStep::Installed);
        assert_eq!(host.state().packages[PACKAGE].version, "2.0.0");
        assert_eq!(host.state().packages[PACKAGE].server_hash, b"offer-2");
    }
}

#[tokio::test]
async fn killed_during_the_health_gate_of_a_bad_binary_rolls_back() {
    let Crash { mut host, old, .. } = crash_at(
        InstallStep::HealthGate,
        crash_at_start_script("2.0.0"),
        true,
    )
    .await;
    let recovery = recover(&mut host).await.unwrap();
    let Recovery::RolledBack {
        error_message,
        healthy,
    } = recovery
    else {
        panic!("{recovery:?}");
    };
    assert_eq!(healthy, Some(true));
    assert!(
        error_message.contains("failed its health gate"),
        "{error_message}"
    );
    assert_eq!(host.exe_content(), old);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("1.0.0"));
    assert_eq!(journal_step(&host), InstallStep::Failed);
    assert_eq!(host.state().failed_offers[PACKAGE].offered_hash, b"offer-2");
}

#[tokio::test]
async fn killed_while_rolling_back_finishes_the_rollback() {
    let Crash {
        mut host,
        old,
        mut record,
        ..
    } = crash_at(
        InstallStep::RollingBack,
        crash_at_start_script("2.0.0"),
        true,
    )
    .await;
    record.error = Some("otelcol 2.0.0 failed its health gate: exited (exit status: 3)".into());
    Journal::new(host.layout.journal_path())
        .write(&record)
        .unwrap();
    let recovery = recover(&mut host).await.unwrap();
    let Recovery::RolledBack { error_message, .. } = recovery else {
        panic!("{recovery:?}");
    };
    assert!(
        error_message.starts_with("otelcol 2.0.0 failed its health gate: exited (exit status: 3)"),
        "{error_message}"
    );
    assert_eq!(host.exe_content(), old);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn repeated_interruptions_of_the_health_gate_roll_back() {
    let Crash {
        mut host,
        old,
        mut record,
        ..
    } = crash_at(InstallStep::HealthGate, healthy_script("2.0.0"), true).await;
    record.recovery_attempts = 2;
    Journal::new(host.layout.journal_path())
        .write(&record)
        .unwrap();
    let recovery = recover(&mut host).await.unwrap();
    let Recovery::RolledBack { error_message, .. } = recovery else {
        panic!("{recovery:?}");
    };
    assert!(
        error_message.contains("interrupted 2 times"),
        "{error_message}"
    );
    assert_eq!(host.exe_content(), old);
}

#[tokio::test]
async fn unknown_live_executable_is_replaced_by_the_verified_previous_one() {
    let Crash { mut host, old, .. } =
        crash_at(InstallStep::Starting, healthy_script("2.0.0"), true).await;
    write_executable(&host.exe, &healthy_script("9.9.9-unverified"));
    let recovery = recover(&mut host).await.unwrap();
    assert!(
        matches!(
            recovery,
            Recovery::RolledBack {
                healthy: Some(true),
                ..
            }
        ),
        "{recovery:?}"
    );
    assert_eq!(host.exe_content(), old);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn unknown_live_executable_without_a_previous_copy_is_not_started() {
    let Crash { mut host, .. } =
        crash_at(InstallStep::Starting, healthy_script("2.0.0"), true).await;
    write_executable(&host.exe, &healthy_script("9.9.9-unverified"));
    std::fs::remove_file(host.previous_path()).unwrap();
    let err = recover(&mut host).await.unwrap_err();
    assert!(
        matches!(err, InstallError::UnknownExecutable { .. }),
        "{err}"
    );
    assert!(host.collector.started.is_empty());
}

#[tokio::test]
async fn tampered_staged_file_is_never_started() {
    // Killed after the swap, but the live file is not what was verified: must not run it.
    let Crash { mut host, old, .. } =
        crash_at(InstallStep::HealthGate, healthy_script("2.0.0"), true).await;
    let mut tampered = healthy_script("2.0.0");
    tampered.extend_from_slice(b"# evil\n");
    write_executable(&host.exe, &tampered);
    let recovery = recover(&mut host).await.unwrap();
    assert!(
        matches!(recovery, Recovery::RolledBack { .. }),
        "{recovery:?}"
    );
    assert_eq!(host.exe_content(), old);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn corrupt_journal_is_quarantined_and_unverified_files_removed() {
    let Crash { mut host, old, .. } =
        crash_at(InstallStep::Staged, healthy_script("2.0.0"), false).await;
    let path = host.layout.journal_path();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(&path, bytes).unwrap();

    let recovery = recover(&mut host).await.unwrap();
    assert!(
        matches!(recovery, Recovery::CorruptJournal { .. }),
        "{recovery:?}"
    );
    assert!(!host.next_path().exists());
    assert_eq!(host.exe_content(), old);
    assert!(host.collector.started.is_empty());
    assert!(path.with_file_name("install-journal.json.corrupt").exists());
    // A second start is clean.
    assert_eq!(recover(&mut host).await.unwrap(), Recovery::Clean);
}

#[tokio::test]
async fn finished_installs_need_no_recovery() {
    for step in [
        InstallStep::Installed,
        InstallStep::Failed,
        InstallStep::Idle,
    ] {
        let Crash { mut host, .. } = crash_at(step, healthy_script("2.0.0"), false).await;
        assert_eq!(
            recover(&mut host).await.unwrap(),
            Recovery::Clean,
            "{step:?}"
        );
        assert!(host.collector.started.is_empty());
    }
}

/// What a kill can leave in each file.
#[derive(Debug, Clone, Copy)]
enum Live {
    Old,
    New,
    Garbage,
    Missing,
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(24))]

    /// Whatever step the journal names and whatever the files hold, recovery either refuses
    /// (and starts nothing) or leaves the old or the new verified binary in place, and never
    /// starts anything else.
    #[test]
    fn recovery_only_ever_runs_a_verified_binary(
        step in proptest::sample::select(vec![
            InstallStep::Idle, InstallStep::Downloading, InstallStep::Verifying,
            InstallStep::Staged, InstallStep::Stopping, InstallStep::Swapping,
            InstallStep::Starting, InstallStep::HealthGate, InstallStep::Installed,
            InstallStep::RollingBack, InstallStep::Failed,
        ]),
        live in proptest::sample::select(vec![Live::Old, Live::New, Live::Garbage, Live::Missing]),
        keep_previous in proptest::bool::ANY,
        keep_next in proptest::bool::ANY,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let new = healthy_script("2.0.0");
            let Crash { mut host, old, .. } = crash_at(step, new.clone(), false).await;
            host.collector.settle = std::time::Duration::from_millis(50);
            if keep_previous {
                std::fs::copy(&host.exe, host.previous_path()).unwrap();
            }
            match live {
                Live::Old => {}
                Live::New => write_executable(&host.exe, &new),
                Live::Garbage => write_executable(&host.exe, &healthy_script("6.6.6")),
                Live::Missing => std::fs::remove_file(&host.exe).unwrap(),
            }
            if !keep_next {
                let _ = std::fs::remove_file(host.next_path());
            }
            let before = std::fs::read(&host.exe).ok();

            let result = recover(&mut host).await;

            let after = std::fs::read(&host.exe).ok();
            match &result {
                Ok(Recovery::Clean | Recovery::Abandoned { .. } | Recovery::CorruptJournal { .. }) => {
                    assert_eq!(after, before, "{step:?} {live:?}: untouched");
                    assert!(host.collector.started.is_empty());
                }
                Ok(Recovery::Completed { .. }) => assert_eq!(after.as_ref(), Some(&new)),
                Ok(Recovery::RolledBack { healthy, .. }) => {
                    if healthy.is_some() {
                        assert_eq!(after.as_ref(), Some(&old), "{step:?} {live:?}");
                    } else {
                        // Nothing restorable: the live path keeps a verified binary or nothing.
                        assert!(
                            after.is_none() || after.as_ref() == Some(&old) || after.as_ref() == Some(&new),
                            "{step:?} {live:?}: left an unverified binary"
                        );
                    }
                }
                Err(_) => assert!(host.collector.started.is_empty()),
                Ok(other) => panic!("unexpected {other:?}"),
            }
            if step.is_in_progress() {
                assert!(!host.next_path().exists(), "{step:?}: unverified next file left");
            }
            assert!(
                matches!(host.collector.healthy_version.as_deref(), None | Some("1.0.0" | "2.0.0")),
                "{step:?} {live:?} ran {:?}",
                host.collector.healthy_version
            );
        });
    }
}

#[tokio::test]
async fn rolling_back_over_an_unknown_binary_without_a_previous_copy_starts_nothing() {
    let Crash { mut host, .. } =
        crash_at(InstallStep::RollingBack, healthy_script("2.0.0"), true).await;
    write_executable(&host.exe, &healthy_script("6.6.6"));
    std::fs::remove_file(host.previous_path()).unwrap();
    let err = recover(&mut host).await.unwrap_err();
    assert!(
        matches!(err, InstallError::UnknownExecutable { .. }),
        "{err}"
    );
    assert!(host.collector.started.is_empty());
}
