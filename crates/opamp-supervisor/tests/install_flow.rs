//! End-to-end installs with real HTTP on 127.0.0.1, signed offers, real files and real child
//! processes: upgrade, tar.gz release, failures at every gate with automatic rollback, refused
//! offers that never touch the running collector.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use std::io::Write;

use install_support::{
    FileServer, Host, PACKAGE, crash_at_start_script, crash_later_script, healthy_script,
    unhealthy_script,
};
use opamp_supervisor::install::{InstallError, InstallEvent};
use opamp_supervisor::journal::{InstallStep, Journal};
use opamp_verify::{DowngradeAuthorisation, ReleaseSigner, VerifyError};

fn steps(events: &[(std::time::Instant, InstallEvent)]) -> Vec<InstallStep> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            InstallEvent::Step(step) => Some(*step),
            _ => None,
        })
        .collect()
}

fn at(events: &[(std::time::Instant, InstallEvent)], wanted: &InstallEvent) -> std::time::Instant {
    events.iter().find(|(_, e)| e == wanted).unwrap().0
}

#[tokio::test]
async fn upgrade_swaps_keeps_previous_and_reports_installed() {
    let old = healthy_script("1.0.0");
    let new = healthy_script("2.0.0");
    let mut host = Host::new(&old, "1.0.0").await;
    let server = FileServer::start(new.clone()).await;
    let offer = host.offer(&server.url(), "2.0.0", &new);
    assert!(host.would_install(&offer));

    let (result, events) = host.install(&offer).await;
    let installed = result.unwrap();

    assert_eq!(installed.version, "2.0.0");
    assert_eq!(installed.server_hash, offer.hash);
    assert_eq!(host.exe_content(), new);
    assert_eq!(std::fs::read(host.previous_path()).unwrap(), old);
    assert!(!host.next_path().exists());
    assert_eq!(host.collector.healthy_version.as_deref(), Some("2.0.0"));
    assert!(host.collector.is_running());
    use InstallStep::*;
    assert_eq!(
        steps(&events),
        [
            Downloading,
            Verifying,
            Staged,
            Stopping,
            Swapping,
            Starting,
            HealthGate
        ]
    );
    assert!(matches!(events[1].1, InstallEvent::Downloading(_)));
    let state = host.state();
    assert_eq!(state.packages[PACKAGE].version, "2.0.0");
    assert_eq!(state.packages[PACKAGE].server_hash, offer.hash);
    assert!(!host.would_install(&offer));
    let journal = Journal::new(host.layout.journal_path())
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(journal.step, InstallStep::Installed);
    // The server re-sending the same offer changes nothing.
    let requests = server.requests().len();
    let (again, again_events) = host.install(&offer).await;
    assert_eq!(again.unwrap().version, "2.0.0");
    assert_eq!(server.requests().len(), requests);
    assert!(steps(&again_events).is_empty());

    // Downtime: from the stop of the old collector to the new one passing its gate (the gate
    // includes the test collector's 400 ms liveness window); the file swap alone is tiny.
    let stop = at(&events, &InstallEvent::Step(Stopping));
    let swap = at(&events, &InstallEvent::Step(Swapping));
    let start = at(&events, &InstallEvent::Step(Starting));
    let done = at(
        &events,
        &InstallEvent::Installed {
            version: "2.0.0".into(),
        },
    );
    println!(
        "downtime {:?} (stop {:?}, swap {:?}, start+gate {:?})",
        done - stop,
        swap - stop,
        start - swap,
        done - start
    );
}

#[tokio::test]
async fn release_tar_gz_is_unpacked_and_its_executable_installed() {
    let old = healthy_script("1.0.0");
    let new = healthy_script("2.1.0");
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(new.len() as u64);
    header.set_mode(0o755);
    header.set_cksum();
    tar.append_data(&mut header, "otelcol", &new[..]).unwrap();
    let mut readme = tar::Header::new_gnu();
    readme.set_size(2);
    readme.set_mode(0o644);
    readme.set_cksum();
    tar.append_data(&mut readme, "README.md", &b"hi"[..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    let archive = gz.finish().unwrap();

    let mut host = Host::new(&old, "1.0.0").await;
    let server = FileServer::start(archive.clone()).await;
    let offer = host.offer(&server.url(), "2.1.0", &archive);
    let (result, _) = host.install(&offer).await;
    result.unwrap();
    assert_eq!(host.exe_content(), new);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("2.1.0"));
}

/// Installs `bad` over a healthy 1.0.0 and checks the rollback.
async fn assert_rolls_back(bad: Vec<u8>, expected_in_message: &str) {
    let old = healthy_script("1.0.0");
    let mut host = Host::new(&old, "1.0.0").await;
    let server = FileServer::start(bad.clone()).await;
    let offer = host.offer(&server.url(), "2.0.0", &bad);

    let (result, events) = host.install(&offer).await;
    let failed = result.unwrap_err();

    assert!(failed.rolled_back);
    assert_eq!(failed.collector_healthy, Some(true));
    assert!(
        matches!(failed.error, InstallError::HealthGate { .. }),
        "{}",
        failed.error
    );
    assert!(
        failed.error_message.contains(expected_in_message),
        "{}",
        failed.error_message
    );
    assert!(
        failed
            .error_message
            .ends_with("rolled back to 1.0.0, which is healthy"),
        "{}",
        failed.error_message
    );
    assert_eq!(host.exe_content(), old);
    assert_eq!(host.collector.healthy_version.as_deref(), Some("1.0.0"));
    assert!(host.collector.is_running());
    assert!(steps(&events).ends_with(&[InstallStep::HealthGate, InstallStep::RollingBack]));
    assert!(matches!(
        &events.last().unwrap().1,
        InstallEvent::InstallFailed { error_message } if *error_message == failed.error_message
    ));
    // Not retried until the offer changes.
    assert!(!host.would_install(&offer));
    let mut changed = offer.clone();
    changed.hash = vec![1, 2, 3];
    assert!(host.would_install(&changed));
    assert_eq!(host.state().packages[PACKAGE].version, "1.0.0");
    let journal = Journal::new(host.layout.journal_path())
        .load()
        .unwrap()
        .unwrap();
    assert_eq!(journal.step, InstallStep::Failed);
    assert_eq!(
        journal.error.as_deref(),
        Some(failed.error_message.as_str())
    );

    // The same offer again: the original failure is reported, nothing is downloaded or stopped.
    let requests = server.requests().len();
    let stops = host.collector.stops;
    let (again, _) = host.install(&offer).await;
    let again = again.unwrap_err();
    assert!(
        matches!(again.error, InstallError::PreviouslyFailed { .. }),
        "{}",
        again.error
    );
    assert_eq!(again.error_message, failed.error_message);
    assert_eq!(server.requests().len(), requests);
    assert_eq!(host.collector.stops, stops);
}

#[tokio::test]
async fn new_binary_crashing_at_start_is_rolled_back() {
    assert_rolls_back(
        crash_at_start_script("2.0.0"),
        "otelcol 2.0.0 failed its health gate: exited (exit status: 3)",
    )
    .await;
}

#[tokio::test]
async fn new_binary_crashing_after_start_is_rolled_back() {
    assert_rolls_back(crash_later_script("2.0.0"), "exited (exit status: 4)").await;
}

#[tokio::test]
async fn new_binary_that_never_becomes_healthy_is_rolled_back() {
    assert_rolls_back(
        unhealthy_script("2.0.0"),
        "failed its health gate: not healthy before the deadline",
    )
    .await;
}

/// Runs an offer that must fail before anything is touched.
async fn assert_refused_untouched(
    host: &mut Host,
    offer: &opamp_proto::v1::PackageAvailable,
) -> opamp_supervisor::install::InstallFailed {
    let before = host.exe_content();
    let (result, events) = host.install(offer).await;
    let failed = result.unwrap_err();
    assert!(!failed.rolled_back);
    assert_eq!(host.collector.stops, 0, "the running collector was stopped");
    assert!(host.collector.is_running());
    assert_eq!(host.exe_content(), before);
    assert!(!host.next_path().exists());
    assert!(
        failed
            .error_message
            .ends_with("the running collector was not changed"),
        "{}",
        failed.error_message
    );
    assert!(!steps(&events).contains(&InstallStep::Stopping));
    failed
}

#[tokio::test]
async fn served_bytes_that_do_not_match_the_signed_hash_are_refused() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let signed = healthy_script("2.0.0");
    let tampered = healthy_script("6.6.6");
    assert_eq!(signed.len(), tampered.len());
    let server = FileServer::start(tampered).await;
    let offer = host.offer(&server.url(), "2.0.0", &signed);
    let failed = assert_refused_untouched(&mut host, &offer).await;
    assert!(
        failed.error_message.contains("content hash mismatch"),
        "{}",
        failed.error_message
    );
    assert!(!host.would_install(&offer));
}

#[tokio::test]
async fn signature_by_an_unknown_key_is_refused_before_downloading() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let new = healthy_script("2.0.0");
    let server = FileServer::start(new.clone()).await;
    let stranger = ReleaseSigner::generate_ed25519().unwrap();
    let offer = host.offer_signed(
        &server.url(),
        "2.0.0",
        &new,
        &stranger,
        DowngradeAuthorisation::Forbidden,
    );
    let failed = assert_refused_untouched(&mut host, &offer).await;
    assert!(
        matches!(
            &failed.error,
            InstallError::Verify { source, .. } if matches!(**source, VerifyError::UnknownKey { .. })
        ),
        "{}",
        failed.error
    );
    assert!(server.requests().is_empty(), "nothing may be downloaded");
}

#[tokio::test]
async fn downgrade_needs_a_signed_authorisation() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let older = healthy_script("0.9.0");
    let server = FileServer::start(older.clone()).await;

    let plain = host.offer(&server.url(), "0.9.0", &older);
    let failed = assert_refused_untouched(&mut host, &plain).await;
    assert!(
        matches!(&failed.error, InstallError::Verify { .. }),
        "{}",
        failed.error
    );

    let mut authorised = host.offer_signed(
        &server.url(),
        "0.9.0",
        &older,
        &host.signer,
        DowngradeAuthorisation::AllowFromAtMost("1.0.0".parse().unwrap()),
    );
    authorised.hash.push(1); // a new offer
    let (result, _) = host.install(&authorised).await;
    assert_eq!(result.unwrap().version, "0.9.0");
    assert_eq!(host.collector.healthy_version.as_deref(), Some("0.9.0"));
    // The anti-rollback floor stays at the highest version ever installed.
    assert_eq!(
        host.installer
            .rollback_floor()
            .for_package(PACKAGE)
            .unwrap(),
        Some(semver::Version::new(1, 0, 0))
    );
}

#[tokio::test]
async fn interrupted_download_is_retried_and_resumes() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let mut new = healthy_script("2.0.0");
    new.resize(200_000, b'\n'); // trailing blank lines keep it a valid script
    let server = FileServer::start(new.clone()).await;
    server.set_fault(install_support::Fault::CutAt(70_000));
    let offer = host.offer(&server.url(), "2.0.0", &new);

    let (result, _) = host.install(&offer).await;
    let failed = result.unwrap_err();
    assert!(failed.error.is_retryable(), "{}", failed.error);
    assert!(host.would_install(&offer), "a cut download is retried");
    assert_eq!(host.collector.stops, 0);

    let (result, _) = host.install(&offer).await;
    result.unwrap();
    let last = server.requests().pop().unwrap();
    assert_eq!(last.range.as_deref(), Some("bytes=70000-"));
    assert_eq!(host.exe_content(), new);
}

#[tokio::test]
async fn unwritable_journal_is_a_clear_error_and_the_collector_keeps_running() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    // A directory where the journal file should be makes every journal write fail, as a
    // read-only or full disk would (tests run as root, so permissions would not stop writes).
    std::fs::create_dir_all(host.layout.journal_path().join("blocker")).unwrap();
    let new = healthy_script("2.0.0");
    let server = FileServer::start(new.clone()).await;
    let offer = host.offer(&server.url(), "2.0.0", &new);
    let failed = assert_refused_untouched(&mut host, &offer).await;
    assert!(
        matches!(failed.error, InstallError::Journal(_)),
        "{}",
        failed.error
    );
    assert!(
        failed
            .error_message
            .starts_with("install journal: cannot write"),
        "{}",
        failed.error_message
    );
    assert!(server.requests().is_empty());
}

/// A host whose collector was never installed: no live executable.
async fn bare_host() -> Host {
    let mut host = Host::new(&healthy_script("0.0.1"), "0.0.1").await;
    use opamp_supervisor::install::Collector;
    host.collector.stop().await.unwrap();
    host.collector = install_support::ScriptCollector::new();
    std::fs::remove_file(&host.exe).unwrap();
    host
}

#[tokio::test]
async fn first_install_without_a_previous_binary() {
    let mut host = bare_host().await;
    let new = healthy_script("1.0.0");
    let server = FileServer::start(new.clone()).await;
    let offer = host.offer(&server.url(), "1.0.0", &new);
    let (result, _) = host.install(&offer).await;
    result.unwrap();
    assert_eq!(host.exe_content(), new);
    assert!(!host.previous_path().exists());
}

#[tokio::test]
async fn failed_first_install_leaves_no_binary_behind() {
    let mut host = bare_host().await;
    let bad = crash_at_start_script("1.0.0");
    let server = FileServer::start(bad.clone()).await;
    let offer = host.offer(&server.url(), "1.0.0", &bad);
    let (result, _) = host.install(&offer).await;
    let failed = result.unwrap_err();
    assert_eq!(failed.collector_healthy, None);
    assert!(
        failed
            .error_message
            .ends_with("there was no previous executable; the failed one was removed"),
        "{}",
        failed.error_message
    );
    assert!(!host.exe.exists());
}

#[tokio::test]
async fn addon_packages_are_not_installed_as_the_collector() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let new = healthy_script("2.0.0");
    let server = FileServer::start(new.clone()).await;
    let mut offer = host.offer(&server.url(), "2.0.0", &new);
    offer.r#type = opamp_proto::v1::PackageType::Addon as i32;
    let failed = assert_refused_untouched(&mut host, &offer).await;
    assert!(
        matches!(failed.error, InstallError::NotTopLevel { .. }),
        "{}",
        failed.error
    );
}

#[tokio::test]
async fn downtime_does_not_grow_with_the_binary_size() {
    // 16 MiB "binary": the script runs, the padding after `exec` is never read.
    let mut big = healthy_script("2.0.0");
    big.resize(16 << 20, b'#');
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let server = FileServer::start(big.clone()).await;
    let offer = host.offer(&server.url(), "2.0.0", &big);
    let started = std::time::Instant::now();
    let (result, events) = host.install(&offer).await;
    result.unwrap();
    let total = started.elapsed();
    use InstallStep::*;
    let stop = at(&events, &InstallEvent::Step(Stopping));
    let start = at(&events, &InstallEvent::Step(Starting));
    let done = at(
        &events,
        &InstallEvent::Installed {
            version: "2.0.0".into(),
        },
    );
    println!(
        "16 MiB install: total {total:?}, collector down {:?}, of which stop+swap {:?}",
        done - stop,
        start - stop
    );
    // The bytes were copied beside the live binary before the stop: the swap is two renames.
    assert!(
        start - stop < std::time::Duration::from_secs(1),
        "stop+swap took {:?}",
        start - stop
    );
}

/// A fresh journal record for an install of `version` (server hash `[hash]`) on `host`.
fn record_for(host: &Host, version: &str, hash: u8) -> opamp_supervisor::journal::InstallRecord {
    opamp_supervisor::journal::InstallRecord::new(PACKAGE, version, vec![hash], host.exe.clone())
}

/// The proof an agent gets for `bytes` offered as version 2.0.0.
fn verified_2_0_0(
    host: &Host,
    bytes: &[u8],
) -> opamp_verify::Verified<opamp_verify::VerifiedPackage> {
    let offer = host.offer("http://127.0.0.1:9/unused", "2.0.0", bytes);
    let file = offer.file.as_ref().unwrap();
    host.policy
        .verify_package(
            &opamp_verify::PackageToVerify::new(
                PACKAGE,
                "2.0.0",
                &file.content_hash,
                &file.signature,
            ),
            &opamp_verify::VerificationContext::new(std::time::SystemTime::now()),
            bytes,
            1 << 20,
        )
        .unwrap()
}

#[tokio::test]
async fn a_proof_for_another_version_cannot_stage_an_install() {
    let host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let bytes = healthy_script("2.0.0");
    let verified = verified_2_0_0(&host, &bytes);
    let package = host.dir.path().join("package");
    std::fs::write(&package, &bytes).unwrap();
    let mut record = record_for(&host, "3.0.0", 3);
    let err = host
        .installer
        .stage(&mut record, &verified, &package)
        .unwrap_err();
    assert!(matches!(err, InstallError::ProofMismatch { .. }), "{err}");
    assert!(!host.next_path().exists());

    // The matching record stages, and the staged file is beside the live one.
    let mut record = record_for(&host, "2.0.0", 2);
    let staged = host
        .installer
        .stage(&mut record, &verified, &package)
        .unwrap();
    assert_eq!(staged.record().step, InstallStep::Staged);
    assert_eq!(std::fs::read(host.next_path()).unwrap(), bytes);
    // A caller's file is copied, not moved: it is still there.
    assert_eq!(std::fs::read(&package).unwrap(), bytes);
}

/// The proof and a package file that changed after it was made.
fn verified_then_tampered(
    host: &Host,
) -> (
    opamp_verify::Verified<opamp_verify::VerifiedPackage>,
    std::path::PathBuf,
) {
    let verified = verified_2_0_0(host, &healthy_script("2.0.0"));
    let package = host.dir.path().join("package");
    std::fs::write(&package, healthy_script("6.6.6")).unwrap();
    (verified, package)
}

#[tokio::test]
async fn a_package_file_changed_after_its_verification_is_not_staged() {
    let host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let (verified, package) = verified_then_tampered(&host);
    let mut record = record_for(&host, "2.0.0", 2);
    let err = host
        .installer
        .stage(&mut record, &verified, &package)
        .unwrap_err();
    assert!(matches!(err, InstallError::NotVerified { .. }), "{err}");
    assert!(!host.next_path().exists(), "the unverified copy was left");
    assert_eq!(host.exe_content(), healthy_script("1.0.0"));
}

#[tokio::test]
async fn a_staged_executable_changed_before_the_swap_is_not_swapped_in() {
    let mut host = Host::new(&healthy_script("1.0.0"), "1.0.0").await;
    let bytes = healthy_script("2.0.0");
    let (verified, package) = verified_then_tampered(&host);
    std::fs::write(&package, &bytes).unwrap();
    let mut record = record_for(&host, "2.0.0", 2);
    let staged = host
        .installer
        .stage(&mut record, &verified, &package)
        .unwrap();
    std::fs::write(host.next_path(), healthy_script("6.6.6")).unwrap();
    let failed = host
        .installer
        .install_staged(&mut host.collector, staged, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(failed.error, InstallError::NotVerified { .. }),
        "{}",
        failed.error_message
    );
    assert!(!failed.rolled_back, "the live collector was touched");
    assert_eq!(host.exe_content(), healthy_script("1.0.0"));
    assert!(host.collector.is_running());
}
