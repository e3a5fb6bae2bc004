//! `opamp supervisor --reset-rollback-floor`: the operator's way out of a fail-closed floor.
//! With both copies of the floor corrupt, a supervisor refuses every install until an operator
//! sets it; the reset refuses while a supervisor holds the storage directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::Workdir;
use opamp_supervisor::journal::{InstalledState, InstalledStateStore};

fn write_config(work: &Workdir) -> String {
    let yaml = format!(
        "server:\n  endpoint: ws://127.0.0.1:9/v1/opamp\nagent:\n  executable: '{}'\n  \
         storage_dir: '{}'\n  package_name: otelcol\n",
        work.path("otelcol").display(),
        work.path("storage").display(),
    );
    work.write("supervisor.yaml", yaml.as_bytes());
    "supervisor.yaml".to_owned()
}

fn flip_last_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_lost_floor_stays_closed_until_the_operator_resets_it() {
    let work = Workdir::new();
    let config = write_config(&work);
    std::fs::create_dir_all(work.path("storage")).unwrap();
    let store = InstalledStateStore::new(work.path("storage").join("installed-state.json"));
    let mut state = InstalledState::default();
    state.record_installed("otelcol", "2.0.0", vec![1], None, None);
    store.save(&state).unwrap();
    flip_last_byte(store.path());
    flip_last_byte(store.floor_path());
    let unknown = store.rollback_floor().for_package("otelcol").unwrap_err();
    assert!(
        unknown.to_string().contains("reset-rollback-floor"),
        "{unknown}"
    );

    let refused = work
        .opamp(&[
            "supervisor",
            "--config",
            &config,
            "--reset-rollback-floor",
            "banana",
        ])
        .expect_code(1);
    assert!(
        refused.stderr.contains("not a version"),
        "{}",
        refused.stderr
    );
    assert!(store.rollback_floor().for_package("otelcol").is_err());

    let done = work
        .opamp(&[
            "supervisor",
            "--config",
            &config,
            "--reset-rollback-floor",
            "2.0.0",
        ])
        .expect_code(0);
    assert!(
        done.stdout
            .contains("anti-rollback floor of otelcol set to 2.0.0"),
        "{}",
        done.stdout
    );
    assert_eq!(
        store.rollback_floor().for_package("otelcol"),
        Ok(Some(semver::Version::new(2, 0, 0)))
    );
}

#[test]
fn the_reset_refuses_while_a_supervisor_holds_the_storage() {
    let work = Workdir::new();
    let config = write_config(&work);
    let storage = work.path("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let lock = opamp_supervisor::lock::StorageLock::acquire(&storage).unwrap();
    let refused = work
        .opamp(&[
            "supervisor",
            "--config",
            &config,
            "--reset-rollback-floor",
            "1.0.0",
        ])
        .expect_code(1);
    assert!(
        refused.stderr.contains("cannot reset the rollback floor"),
        "{}",
        refused.stderr
    );
    drop(lock);
    work.opamp(&[
        "supervisor",
        "--config",
        &config,
        "--reset-rollback-floor",
        "1.0.0",
    ])
    .expect_code(0);
}
