//! The install journal and installed state on real files: round trips, a crash in the middle
//! of a write, torn and edited files.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

use std::fs;
use std::path::PathBuf;

use opamp_supervisor::journal::{
    InstallRecord, InstallStep, InstalledState, InstalledStateStore, Journal, JournalError,
    Sha256Hash,
};
use proptest::prelude::*;

fn record() -> InstallRecord {
    let mut record = InstallRecord::new(
        "otelcol",
        "0.101.0",
        vec![0xab, 0xcd],
        PathBuf::from("/opt/otelcol/otelcol"),
    );
    record.content_hash = Some(Sha256Hash([1; 32]));
    record.staged_sha256 = Some(Sha256Hash([2; 32]));
    record.previous_version = Some("0.100.0".into());
    record
}

#[test]
fn records_round_trip_through_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::new(dir.path().join("install-journal.json"));
    assert_eq!(journal.load().unwrap(), None);
    let mut rec = record();
    journal.write(&rec).unwrap();
    for step in [
        InstallStep::Verifying,
        InstallStep::Staged,
        InstallStep::Stopping,
        InstallStep::Swapping,
        InstallStep::Starting,
        InstallStep::HealthGate,
        InstallStep::Installed,
    ] {
        journal.advance(&mut rec, step).unwrap();
        assert_eq!(journal.load().unwrap().as_ref(), Some(&rec));
    }
    assert_eq!(
        rec.previous_path,
        PathBuf::from("/opt/otelcol/otelcol.previous")
    );
}

#[test]
fn illegal_transition_is_refused_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::new(dir.path().join("j"));
    let mut rec = record();
    journal.write(&rec).unwrap();
    let err = journal
        .advance(&mut rec, InstallStep::Swapping)
        .unwrap_err();
    assert!(
        matches!(err, JournalError::IllegalTransition { .. }),
        "{err}"
    );
    assert_eq!(
        journal.load().unwrap().unwrap().step,
        InstallStep::Downloading
    );
    assert_eq!(rec.step, InstallStep::Downloading);
}

#[test]
fn crash_before_the_rename_leaves_the_previous_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("install-journal.json");
    let journal = Journal::new(&path);
    let mut rec = record();
    journal.write(&rec).unwrap();
    // A writer killed mid-write leaves only its temp file, half written.
    fs::write(
        dir.path().join(".install-journal.json.tmp"),
        b"opamp-journal v1 12",
    )
    .unwrap();
    assert_eq!(
        journal.load().unwrap().unwrap().step,
        InstallStep::Downloading
    );
    // The next write replaces the leftover and succeeds.
    journal.advance(&mut rec, InstallStep::Verifying).unwrap();
    assert_eq!(
        journal.load().unwrap().unwrap().step,
        InstallStep::Verifying
    );
    assert!(!dir.path().join(".install-journal.json.tmp").exists());
}

#[test]
fn torn_or_edited_journal_is_corrupt_and_can_be_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("install-journal.json");
    let journal = Journal::new(&path);
    journal.write(&record()).unwrap();
    let good = fs::read(&path).unwrap();

    // Torn: only the first half reached the disk.
    fs::write(&path, &good[..good.len() / 2]).unwrap();
    assert!(matches!(journal.load(), Err(JournalError::Corrupt { .. })));

    // Edited: the step changed but the checksum was not updated.
    let edited = String::from_utf8(good.clone())
        .unwrap()
        .replace("\"Downloading\"", "\"Swapping\"");
    fs::write(&path, edited).unwrap();
    let err = journal.load().unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");

    // Empty and garbage.
    fs::write(&path, b"").unwrap();
    assert!(matches!(journal.load(), Err(JournalError::Corrupt { .. })));

    let moved = journal.quarantine().unwrap();
    assert!(moved.exists());
    assert_eq!(journal.load().unwrap(), None);
}

#[test]
fn installed_state_survives_reopen_and_tracks_failures_and_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = InstalledStateStore::new(dir.path().join("installed-state.json"));
    assert_eq!(store.load().unwrap(), InstalledState::default());

    let mut state = InstalledState::default();
    state.record_installed("otelcol", "1.2.0", vec![1], Some(Sha256Hash([3; 32])), None);
    state.record_failure("otelcol", "1.3.0", vec![2], "health gate failed");
    store.save(&state).unwrap();

    let reopened = InstalledStateStore::new(dir.path().join("installed-state.json"))
        .load()
        .unwrap();
    assert_eq!(reopened, state);
    assert!(
        !reopened.should_attempt("otelcol", &[1]),
        "already installed"
    );
    assert!(!reopened.should_attempt("otelcol", &[2]), "failed before");
    assert!(
        reopened.should_attempt("otelcol", &[3]),
        "a changed offer is tried"
    );
    assert_eq!(
        reopened.highest_version("otelcol"),
        Some(semver::Version::new(1, 2, 0))
    );
}

#[test]
fn write_into_a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::new(dir.path().join("gone").join("j"));
    let err = journal.write(&record()).unwrap_err();
    assert!(matches!(err, JournalError::Io { .. }), "{err}");
}

proptest! {
    /// Any single-byte change of a journal file is detected.
    #[test]
    fn any_byte_flip_is_detected(position in 0usize..10_000, flip in 1u8..=255) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let journal = Journal::new(&path);
        journal.write(&record()).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let at = position % bytes.len();
        bytes[at] ^= flip;
        fs::write(&path, &bytes).unwrap();
        prop_assert!(journal.load().is_err());
    }
}
