//! The install journal and installed state on real files: round trips, a crash in the middle
//! of a write, torn and edited files.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

use std::fs;
use std::path::PathBuf;

use opamp_packages::ContentHash;
use opamp_supervisor::journal::{
    InstallRecord, InstallStep, InstalledState, InstalledStateStore, Journal, JournalError,
};
use proptest::prelude::*;

fn record() -> InstallRecord {
    let mut record = InstallRecord::new(
        "otelcol",
        "0.101.0",
        vec![0xab, 0xcd],
        PathBuf::from("/opt/otelcol/otelcol"),
    );
    record.content_hash = Some(ContentHash::from_bytes([1; 32]));
    record.staged_sha256 = Some(ContentHash::from_bytes([2; 32]));
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
    state.record_installed(
        "otelcol",
        "1.2.0",
        vec![1],
        Some(ContentHash::from_bytes([3; 32])),
        None,
    );
    state.record_failure("otelcol", "1.3.0", vec![2], "health gate failed");
    store.save(&state).unwrap();

    let reopened = InstalledStateStore::new(dir.path().join("installed-state.json"))
        .load()
        .unwrap();
    assert_eq!(reopened, state);
    assert_eq!(reopened.packages["otelcol"].server_hash, vec![1]);
    assert_eq!(reopened.failed_offers["otelcol"].offered_hash, vec![2]);
    assert_eq!(
        store.rollback_floor().for_package("otelcol"),
        Ok(Some(semver::Version::new(1, 2, 0)))
    );
}

fn store_with_floor(dir: &std::path::Path, version: &str) -> InstalledStateStore {
    let store = InstalledStateStore::new(dir.join("installed-state.json"));
    let mut state = InstalledState::default();
    state.record_installed("otelcol", version, vec![1], None, None);
    store.save(&state).unwrap();
    store
}

fn corrupt(path: &std::path::Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

/// Issue: a corrupt installed-state.json used to be moved aside and rebuilt from the running
/// version, which lowered the anti-rollback floor. The floor file keeps it.
#[test]
fn a_corrupt_installed_state_does_not_lower_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_floor(dir.path(), "2.0.0");
    corrupt(store.path());
    // The state is lost (moved aside), the floor is not.
    assert_eq!(store.load_or_recover(), InstalledState::default());
    assert!(dir.path().join("installed-state.json.corrupt").exists());
    let floor = InstalledStateStore::new(dir.path().join("installed-state.json")).rollback_floor();
    assert_eq!(
        floor.for_package("otelcol"),
        Ok(Some(semver::Version::new(2, 0, 0)))
    );
    // Rebuilding the state from a lower running version does not lower it either.
    let mut rebuilt = InstalledState::default();
    rebuilt.record_installed("otelcol", "1.0.0", vec![], None, None);
    store.save(&rebuilt).unwrap();
    assert_eq!(
        store.rollback_floor().for_package("otelcol"),
        Ok(Some(semver::Version::new(2, 0, 0)))
    );
}

/// With both copies gone the floor is unknown, stays unknown across restarts, and only the
/// operator's reset clears it.
#[test]
fn with_both_copies_corrupt_the_floor_fails_closed_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_floor(dir.path(), "2.0.0");
    corrupt(store.path());
    corrupt(store.floor_path());
    assert_eq!(store.load_or_recover(), InstalledState::default());
    for _restart in 0..2 {
        let reopened = InstalledStateStore::new(dir.path().join("installed-state.json"));
        let err = reopened
            .rollback_floor()
            .for_package("otelcol")
            .unwrap_err();
        assert!(err.to_string().contains("reset-rollback-floor"), "{err}");
        // A save of a fresh state does not quietly make the floor known again.
        reopened.save(&InstalledState::default()).unwrap();
    }
    assert!(
        store
            .reset_rollback_floor("otelcol", "not a version")
            .is_err()
    );
    store.reset_rollback_floor("otelcol", "2.0.0").unwrap();
    assert_eq!(
        store.rollback_floor().for_package("otelcol"),
        Ok(Some(semver::Version::new(2, 0, 0)))
    );
}

/// A valid state heals a corrupt floor file; a floor file that says garbage fails closed.
#[test]
fn a_corrupt_floor_file_is_healed_from_the_state_and_an_unparsable_floor_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_floor(dir.path(), "1.5.0");
    corrupt(store.floor_path());
    assert_eq!(
        store.rollback_floor().for_package("otelcol"),
        Ok(Some(semver::Version::new(1, 5, 0)))
    );
    let mut state = store.load().unwrap();
    if let Some(package) = state.packages.get_mut("otelcol") {
        package.highest_version = "garbage".into();
    }
    // Written with a valid checksum: only the value is wrong.
    store.save(&state).unwrap();
    assert!(store.rollback_floor().for_package("otelcol").is_err());
}

/// Writes `body` as a checked journal file of `kind`, exactly as the supervisor does on disk.
fn write_checked(path: &std::path::Path, kind: &str, body: &str) {
    use sha2::{Digest, Sha256};
    let header = format!(
        "opamp-{kind} v1 {}\n",
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    fs::write(path, format!("{header}{body}")).unwrap();
}

/// Journals written while the hashes were `journal::Sha256Hash` (lowercase hex strings) load
/// into `ContentHash`, and the record is written back in exactly the same form.
#[test]
fn journals_written_with_the_old_hash_type_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let journal_path = dir.path().join("install-journal.json");
    let old_record = r#"{
  "step": "Staged",
  "package_name": "otelcol",
  "offered_version": "1.2.0",
  "offered_hash": "0a0b",
  "content_hash": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  "staged_sha256": "0202020202020202020202020202020202020202020202020202020202020202",
  "staged_path": "/var/lib/opamp/staging/otelcol",
  "previous_version": "1.1.0",
  "previous_sha256": null,
  "executable_path": "/usr/bin/otelcol",
  "previous_path": "/usr/bin/otelcol.previous",
  "error": null,
  "recovery_attempts": 0
}"#;
    write_checked(&journal_path, "journal", old_record);
    let record = Journal::new(&journal_path).load().unwrap().unwrap();
    assert_eq!(record.content_hash, Some(ContentHash::of(b"abc")));
    assert_eq!(record.staged_sha256, Some(ContentHash::from_bytes([2; 32])));
    assert_eq!(record.previous_sha256, None);
    assert_eq!(record.step, InstallStep::Staged);
    let written = serde_json::to_string_pretty(&record).unwrap();
    assert_eq!(written, old_record);

    let state_path = dir.path().join("installed-state.json");
    let old_state = r#"{
  "packages": {
    "otelcol": {
      "version": "1.1.0",
      "content_hash": "0303030303030303030303030303030303030303030303030303030303030303",
      "executable_sha256": "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
      "server_hash": "01",
      "highest_version": "1.1.0"
    }
  },
  "failed_offers": {}
}"#;
    write_checked(&state_path, "installed-state", old_state);
    let state = InstalledStateStore::new(&state_path).load().unwrap();
    let package = &state.packages["otelcol"];
    assert_eq!(package.content_hash, Some(ContentHash::from_bytes([3; 32])));
    assert_eq!(package.executable_sha256, Some(ContentHash::of(b"abc")));
    // Printed back in lowercase, as the old type did.
    let written = serde_json::to_string(&state).unwrap();
    assert!(written.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));

    // A hash of the wrong length is refused as before: the file is corrupt, not half-read.
    let short = old_record.replace(
        "0202020202020202020202020202020202020202020202020202020202020202",
        "0202",
    );
    write_checked(&journal_path, "journal", &short);
    assert!(matches!(
        Journal::new(&journal_path).load(),
        Err(JournalError::Corrupt { .. })
    ));
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
